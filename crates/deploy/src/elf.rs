//! What a shared library file is, read from the file (never `dlopen`ed): ELF or not, for
//! this machine or not, its SONAME, and whether it is one of vgpu's shims.
//!
//! A vgpu shim is recognised by its dynamic symbol table first: the private ABI between
//! the shims is exported under the `vgpu_` prefix (`vgpu_roundtrip` from `libcuda.so.1`,
//! and `vgpu_shim_version` where a shim carries one), which no NVIDIA library has. Shims
//! that export no private symbol (the runtime and cuBLAS shims, NVML) are recognised by
//! the `VGPU_LOG` switch every shim's logger reads (`crates/shim-support`); NVIDIA's
//! libraries contain no such string.

use object::read::elf::{Dyn as _, ElfFile64, FileHeader as _, Sym as _};
use object::{Object as _, elf};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where a library comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// One of vgpu's shims.
    Vgpu,
    /// NVIDIA's (an `NVIDIA` string inside, or a driver-style versioned file name).
    Nvidia,
    /// An ELF library for this machine that is neither.
    Other,
    /// Not an ELF file at all: the loader stops at it with "invalid ELF header".
    NotElf,
    /// An ELF file for another machine or word size: the loader skips it.
    WrongArch,
    /// Missing or unreadable.
    Unreadable,
}

impl Origin {
    pub fn describe(self) -> &'static str {
        match self {
            Origin::Vgpu => "vgpu's",
            Origin::Nvidia => "NVIDIA's",
            Origin::Other => "not vgpu's",
            Origin::NotElf => "not an ELF library",
            Origin::WrongArch => "for another architecture",
            Origin::Unreadable => "unreadable",
        }
    }
}

/// What [`inspect`] found.
#[derive(Clone, Debug, Serialize)]
pub struct LibInfo {
    /// The path asked about.
    pub path: PathBuf,
    /// The file it is, symlinks resolved.
    pub real: PathBuf,
    pub origin: Origin,
    pub soname: Option<String>,
    /// Why it counts as vgpu's (`exports vgpu_roundtrip`, ...).
    pub marker: Option<String>,
    /// `vgpu_shim_version`'s string where the shim is built with one.
    pub version: Option<String>,
    /// Version read from a versioned file name (`libcudart.so.13.0.96` -> `13.0.96`).
    pub file_version: Option<String>,
    /// Why it could not be read, for `Unreadable`/`NotElf`.
    pub error: Option<String>,
    /// blake3 of the contents, hex.
    pub hash: Option<String>,
}

impl LibInfo {
    pub fn is_vgpu(&self) -> bool {
        self.origin == Origin::Vgpu
    }

    /// "vgpu's", "NVIDIA's (13.0.96)", "not an ELF library (file too short)" ...
    pub fn summary(&self) -> String {
        let mut s = self.origin.describe().to_string();
        match self.origin {
            Origin::Vgpu => {
                if let Some(v) = &self.version {
                    s.push_str(&format!(" {v}"));
                }
            }
            Origin::Nvidia | Origin::Other => {
                if let Some(v) = &self.file_version {
                    s.push_str(&format!(" ({v})"));
                }
            }
            _ => {
                if let Some(e) = &self.error {
                    s.push_str(&format!(" ({e})"));
                }
            }
        }
        s
    }
}

/// The ELF machine of this build (libraries for others are skipped by the loader).
fn native_arch() -> object::Architecture {
    if cfg!(target_arch = "x86_64") {
        object::Architecture::X86_64
    } else if cfg!(target_arch = "aarch64") {
        object::Architecture::Aarch64
    } else {
        object::Architecture::Unknown
    }
}

/// The trailing version of a versioned library file name: `libcuda.so.580.82.07` ->
/// `580.82.07`, `libcudart.so.13.0.96` -> `13.0.96`; `None` for a bare `libx.so.1`.
pub fn file_version(name: &str) -> Option<String> {
    let (_, v) = name.split_once(".so.")?;
    (v.contains('.') && v.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        .then(|| v.to_string())
}

/// Read `path` (following symlinks) and classify it.
pub fn inspect(path: &Path) -> LibInfo {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let real_name = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut info = LibInfo {
        path: path.to_path_buf(),
        real: real.clone(),
        origin: Origin::Unreadable,
        soname: None,
        marker: None,
        version: None,
        file_version: file_version(&real_name),
        error: None,
        hash: None,
    };
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) => {
            info.error = Some(e.to_string());
            return info;
        }
    };
    info.hash = Some(blake3::hash(&data).to_hex().to_string());
    classify(&data, &real_name, &mut info);
    info
}

fn classify(data: &[u8], real_name: &str, info: &mut LibInfo) {
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        info.origin = Origin::NotElf;
        info.error = Some(if data.len() < 64 { "file too short" } else { "invalid ELF header" }.to_string());
        return;
    }
    let arch_ok = match object::File::parse(data) {
        Ok(f) => f.architecture() == native_arch() && f.is_64() == cfg!(target_pointer_width = "64"),
        Err(e) => {
            info.origin = Origin::NotElf;
            info.error = Some(e.to_string());
            return;
        }
    };
    if !arch_ok {
        info.origin = Origin::WrongArch;
        return;
    }
    let (soname, vgpu_syms, version) = match dynamic_info(data) {
        Ok(x) => x,
        Err(e) => {
            info.origin = Origin::Other;
            info.error = Some(e);
            return;
        }
    };
    info.soname = soname;
    info.version = version;
    if let Some(sym) = vgpu_syms.first() {
        info.origin = Origin::Vgpu;
        info.marker = Some(format!("exports {sym}"));
    } else if memchr::memmem::find(data, b"VGPU_LOG").is_some() {
        info.origin = Origin::Vgpu;
        info.marker = Some("reads VGPU_LOG (vgpu shim logger)".into());
    } else if memchr::memmem::find(data, b"NVIDIA").is_some()
        || real_name.starts_with("libcuda.so.5")
        || real_name.starts_with("libnvidia-ml.so.5")
    {
        info.origin = Origin::Nvidia;
    } else {
        info.origin = Origin::Other;
    }
}

type Dynamic = (Option<String>, Vec<String>, Option<String>);

/// SONAME, the defined `vgpu_*` dynamic symbols, and the string `vgpu_shim_version` points
/// at when it is a data object.
fn dynamic_info(data: &[u8]) -> Result<Dynamic, String> {
    let err = |e: object::Error| e.to_string();
    let file = ElfFile64::<object::Endianness>::parse(data).map_err(err)?;
    let endian = file.endian();
    let sections = file.elf_header().sections(endian, data).map_err(err)?;
    let mut soname = None;
    if let Some((dyns, link)) = sections.dynamic(endian, data).map_err(err)? {
        let strings = sections.strings(endian, data, link).map_err(err)?;
        for d in dyns {
            if d.tag32(endian) == Some(elf::DT_SONAME) {
                soname = Some(String::from_utf8_lossy(d.string(endian, strings).map_err(err)?).into_owned());
            }
        }
    }
    let symbols = sections.symbols(endian, data, elf::SHT_DYNSYM).map_err(err)?;
    let mut ours = Vec::new();
    let mut version = None;
    for sym in symbols.iter() {
        if sym.is_undefined(endian) {
            continue;
        }
        let name = sym.name(endian, symbols.strings()).map_err(err)?;
        if !name.starts_with(b"vgpu_") {
            continue;
        }
        let name = String::from_utf8_lossy(name).into_owned();
        if name == "vgpu_shim_version" && sym.st_type() == elf::STT_OBJECT {
            version = read_cstr_at(&file, sym.st_value(endian));
        }
        ours.push(name);
    }
    ours.sort();
    // `vgpu_roundtrip` (libcuda's private ABI) names the marker best when present.
    if let Some(i) = ours.iter().position(|s| s == "vgpu_roundtrip") {
        let s = ours.remove(i);
        ours.insert(0, s);
    }
    Ok((soname, ours, version))
}

/// The NUL-terminated string at virtual address `addr` (a data symbol's value).
fn read_cstr_at(file: &ElfFile64<'_, object::Endianness>, addr: u64) -> Option<String> {
    use object::ObjectSegment as _;
    let seg = file.segments().find(|s| (s.address()..s.address() + s.size()).contains(&addr))?;
    let bytes = seg.data().ok()?;
    let start = usize::try_from(addr - seg.address()).ok()?;
    let tail = bytes.get(start..)?;
    let end = tail.iter().position(|&b| b == 0)?.min(64);
    String::from_utf8(tail[..end].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_file_names() {
        assert_eq!(file_version("libcudart.so.13.0.96").as_deref(), Some("13.0.96"));
        assert_eq!(file_version("libcuda.so.580.82.07").as_deref(), Some("580.82.07"));
        assert_eq!(file_version("libcuda.so.1"), None);
        assert_eq!(file_version("libcuda.so"), None);
    }

    #[test]
    fn non_elf_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("libcudart.so.13.0.96");
        std::fs::write(&p, b"not a library").unwrap();
        let i = inspect(&p);
        assert_eq!(i.origin, Origin::NotElf);
        assert_eq!(i.summary(), "not an ELF library (file too short)");
        assert_eq!(i.file_version.as_deref(), Some("13.0.96"));
        assert_eq!(inspect(&dir.path().join("absent")).origin, Origin::Unreadable);
    }

    #[test]
    fn this_test_binary_is_elf_but_not_vgpu() {
        // The test executable is an ELF for this machine without the private ABI (it does
        // contain the VGPU_LOG pattern this module searches for, so it may count as vgpu's).
        let exe = std::env::current_exe().unwrap();
        let i = inspect(&exe);
        assert!(matches!(i.origin, Origin::Other | Origin::Nvidia | Origin::Vgpu), "{i:?}");
        assert!(i.hash.is_some());
    }
}

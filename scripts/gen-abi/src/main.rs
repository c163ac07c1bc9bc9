//! Generator for `crates/abi/src/*.rs`. Run through `scripts/gen-abi.sh`, which downloads the
//! pinned wheels and extracts their headers first.
//!
//! Usage: gen-abi <header-root> <out-dir> <abi-wheels.txt>
//!
//! `<header-root>` is laid out as pip installs the wheels: `nvidia/cu13/include` for the 13.x
//! wheels and `nvidia/{cuda_runtime,cuda_nvcc,cuda_cccl,cublas}/include` for the 12.x ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bindgen::{EnumVariation, RustEdition, RustTarget};

/// One generated module (one output file).
struct Module {
    /// Output file stem, e.g. `cuda` -> `cuda.rs`.
    name: &'static str,
    /// What the module is, for the file header.
    title: &'static str,
    /// Wheels (as pinned in abi-wheels.txt) whose headers are read.
    wheels: &'static [&'static str],
    /// `#include` lines of the wrapper header.
    includes: &'static [&'static str],
    /// Include directories, relative to the header root.
    include_dirs: &'static [&'static str],
    /// `-D` defines.
    defines: &'static [&'static str],
    functions: &'static str,
    types: &'static str,
    vars: &'static str,
    /// Name of the dynamic-loading struct holding the functions matched by `functions`.
    dyn_struct: &'static str,
    /// An optional second dynamic-loading struct (functions regex, struct name) for another
    /// library declared in the same headers (cuBLASLt next to cuBLAS). Its signatures use the
    /// types generated for the module, so the types regex must cover them.
    extra_dyn: Option<(&'static str, &'static str)>,
    /// Parse as C++ (cuBLAS declares its `__half` functions, e.g. cublasHgemm, only for C++).
    cplusplus: bool,
    /// Copy the leading comment block of this header (relative to the root) into the output.
    keep_notice_of: Option<&'static str>,
}

const CU13: &str = "nvidia/cu13/include";
const RT12: &str = "nvidia/cuda_runtime/include";
const NVCC12: &str = "nvidia/cuda_nvcc/include";
const CUBLAS12: &str = "nvidia/cublas/include";
const CCCL12: &str = "nvidia/cuda_cccl/include";

/// Runtime types plus the CUDA vector types (`dim3`, `int2`, `float4`, `double4_16a`, ...).
const RT_TYPES: &str = "cuda.*|CU.*|__cuda.*|libraryPropertyType.*|surfaceReference|textureReference|dim3|(u?char|u?short|u?int|u?long|u?longlong|float|double)[1-4](_16a|_32a)?";

fn modules() -> Vec<Module> {
    vec![
        Module {
            name: "cuda",
            title: "CUDA driver API (cuda.h, CUDA 13.0)",
            wheels: &["nvidia-cuda-runtime"],
            includes: &["cuda.h"],
            include_dirs: &[CU13],
            // __CUDA_API_VERSION_INTERNAL makes cuda.h declare every name libcuda.so.1 exports
            // under its real symbol name: the current `_v2`/`_v3`/`_v4` entry points, the legacy
            // unversioned ones (cuMemAlloc, cuCtxCreate, ...) and the `_ptds`/`_ptsz`
            // per-thread-stream variants. It also adds the legacy `*_v1` types and two `*_MAX`
            // enum values; nothing else in the header changes.
            defines: &["__CUDA_API_VERSION_INTERNAL"],
            functions: "cu[A-Z].*",
            types: "CU.*|cu[a-zA-Z].*",
            vars: "CU.*|cu[a-zA-Z].*",
            dyn_struct: "CudaLib",
            extra_dyn: None,
            keep_notice_of: None,
            cplusplus: false,
        },
        Module {
            name: "cudart13",
            title: "CUDA runtime API (cuda_runtime_api.h, driver_types.h, library_types.h; CUDA 13.0)",
            wheels: &["nvidia-cuda-runtime", "nvidia-cuda-crt"],
            includes: &["cuda_runtime_api.h", "library_types.h"],
            include_dirs: &[CU13],
            // Declares both the default and the `_ptds`/`_ptsz` names, as libcudart exports them.
            defines: &["__CUDA_API_VERSION_INTERNAL"],
            functions: "cuda.*|__cuda.*",
            types: RT_TYPES,
            vars: "cuda.*|CUDA.*|CU_.*",
            dyn_struct: "CudartLib",
            extra_dyn: None,
            keep_notice_of: None,
            cplusplus: false,
        },
        Module {
            name: "cudart12",
            title: "CUDA runtime API (cuda_runtime_api.h, driver_types.h, library_types.h; CUDA 12.9)",
            wheels: &["nvidia-cuda-runtime-cu12", "nvidia-cuda-nvcc-cu12"],
            includes: &["cuda_runtime_api.h", "library_types.h"],
            include_dirs: &[RT12, NVCC12],
            defines: &["__CUDA_API_VERSION_INTERNAL"],
            functions: "cuda.*|__cuda.*",
            types: RT_TYPES,
            vars: "cuda.*|CUDA.*|CU_.*",
            dyn_struct: "CudartLib",
            extra_dyn: None,
            keep_notice_of: None,
            cplusplus: false,
        },
        Module {
            name: "nvml",
            title: "NVML (nvml.h, NVML 13.0)",
            wheels: &["nvidia-nvml-dev"],
            includes: &["nvml.h"],
            include_dirs: &[CU13],
            // Declares both the versioned names (nvmlInit_v2, ...) and the legacy unversioned
            // ones (nvmlInit, ...), as libnvidia-ml.so.1 exports both.
            defines: &["NVML_NO_UNVERSIONED_FUNC_DEFS"],
            functions: "nvml.*",
            types: "nvml.*|NVML.*",
            vars: "nvml.*|NVML.*",
            dyn_struct: "NvmlLib",
            extra_dyn: None,
            keep_notice_of: Some("nvidia/cu13/include/nvml.h"),
            cplusplus: false,
        },
        Module {
            name: "cublas13",
            title: "cuBLAS v2 + cuBLASLt (cublas_v2.h, cublasLt.h, library_types.h; cuBLAS 13.1 / CUDA 13.0 U2)",
            wheels: &[
                "nvidia-cublas",
                "nvidia-cuda-runtime",
                "nvidia-cuda-crt",
                "nvidia-cuda-cccl",
            ],
            includes: &["cublas_v2.h", "cublasLt.h", "library_types.h"],
            include_dirs: &[CU13],
            defines: &[],
            functions: CUBLAS_NOT_LT,
            types: CUBLAS_TYPES,
            vars: "CUBLAS.*|cublas.*",
            dyn_struct: "CublasLib",
            extra_dyn: Some(("cublasLt.*", "CublasLtLib")),
            keep_notice_of: None,
            cplusplus: true,
        },
        Module {
            name: "cublas12",
            title: "cuBLAS v2 + cuBLASLt (cublas_v2.h, cublasLt.h, library_types.h; cuBLAS 12.9)",
            wheels: &[
                "nvidia-cublas-cu12",
                "nvidia-cuda-runtime-cu12",
                "nvidia-cuda-nvcc-cu12",
                "nvidia-cuda-cccl-cu12",
            ],
            includes: &["cublas_v2.h", "cublasLt.h", "library_types.h"],
            include_dirs: &[CUBLAS12, RT12, NVCC12, CCCL12],
            defines: &[],
            functions: CUBLAS_NOT_LT,
            types: CUBLAS_TYPES,
            vars: "CUBLAS.*|cublas.*",
            dyn_struct: "CublasLib",
            extra_dyn: Some(("cublasLt.*", "CublasLtLib")),
            keep_notice_of: None,
            cplusplus: true,
        },
    ]
}

/// cuBLAS functions that are not cuBLASLt ones (the regex crate has no look-ahead).
const CUBLAS_NOT_LT: &str = "cublas([^L].*|L[^t].*)";
const CUBLAS_TYPES: &str = "cublas.*|CUBLAS.*|cudaDataType.*|libraryPropertyType.*|cuComplex|cuFloatComplex|cuDoubleComplex|__half|__half_raw|__nv_bfloat16|__nv_bfloat16_raw|FILE";

fn pinned_versions(pins: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(pins).expect("read abi-wheels.txt");
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let spec = line.split_whitespace().next().unwrap();
        if let Some((name, ver)) = spec.split_once("==") {
            map.insert(name.to_string(), ver.to_string());
        }
    }
    map
}

/// The first `/* ... */` block of a header, re-emitted as `//` comment lines.
fn leading_notice(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read header for notice");
    let start = text.find("/*").expect("no leading comment");
    let end = text[start..].find("*/").expect("unterminated comment") + start;
    let mut out = String::new();
    for line in text[start + 2..end].lines() {
        let l = line.trim_start();
        let l = l.strip_prefix('*').unwrap_or(l);
        let l = l.strip_prefix(' ').unwrap_or(l);
        if l.trim().is_empty() {
            out.push_str("//\n");
        } else {
            out.push_str("// ");
            out.push_str(l.trim_end());
            out.push('\n');
        }
    }
    // Drop leading/trailing empty comment lines.
    out.trim_matches(|c| c == '\n')
        .trim_start_matches("//\n")
        .trim_end_matches("\n//")
        .to_string()
}

fn base_builder(root: &Path, m: &Module) -> bindgen::Builder {
    let wrapper: String = m
        .includes
        .iter()
        .map(|h| format!("#include <{h}>\n"))
        .collect();
    let mut b = bindgen::Builder::default()
        .header_contents("gen-abi-wrapper.h", &wrapper)
        .rust_target(RustTarget::stable(85, 0).expect("rust target"))
        .rust_edition(RustEdition::Edition2024)
        .generate_comments(false)
        .layout_tests(true)
        .derive_default(true)
        .derive_debug(true)
        .derive_copy(true)
        .default_enum_style(EnumVariation::NewType {
            is_bitfield: false,
            is_global: false,
        })
        .size_t_is_usize(true)
        .wrap_unsafe_ops(true)
        // cublasLtLoggerSetFile takes a `FILE *`; keep glibc's struct opaque.
        .opaque_type("_IO_FILE")
        .dynamic_link_require_all(false)
        .clang_args(if m.cplusplus {
            ["-xc++", "-std=c++17"]
        } else {
            ["-xc", "-std=c11"]
        });
    for d in m.include_dirs {
        b = b.clang_arg(format!("-I{}", root.join(d).display()));
    }
    for d in m.defines {
        b = b.clang_arg(format!("-D{d}"));
    }
    b
}

fn generate(root: &Path, out_dir: &Path, pins: &BTreeMap<String, String>, m: &Module) {
    let mut header = String::new();
    header.push_str(
        "// @generated by scripts/gen-abi.sh (scripts/gen-abi, bindgen 0.72) -- do not edit.\n",
    );
    header.push_str(&format!("// {}\n", m.title));
    let wheels: Vec<String> = m
        .wheels
        .iter()
        .map(|w| {
            format!(
                "{w}=={}",
                pins.get(*w).unwrap_or_else(|| panic!("{w} not pinned"))
            )
        })
        .collect();
    header.push_str(&format!("// Source wheels: {}\n", wheels.join(", ")));
    if !m.defines.is_empty() {
        header.push_str(&format!("// Defines: {}\n", m.defines.join(" ")));
    }
    header.push_str(&format!(
        "// Functions are not declared as `extern \"C\"`: their signatures live in the\n\
         // dynamic-loading struct `{}` (one `Result<fn, libloading::Error>` per symbol).\n",
        m.dyn_struct
    ));
    if let Some(h) = m.keep_notice_of {
        header.push_str("//\n// The notice of nvml.h, which its licence asks to keep in comments of code using it:\n//\n");
        header.push_str(&leading_notice(&root.join(h)));
        header.push('\n');
    }

    let b = base_builder(root, m)
        .allowlist_function(m.functions)
        .allowlist_type(m.types)
        .allowlist_var(m.vars)
        .dynamic_library_name(m.dyn_struct);
    let main = b
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed for {}: {e}", m.name))
        .to_string();

    let mut text = header;
    text.push('\n');
    text.push_str(&main);

    if let Some((funcs, name)) = m.extra_dyn {
        let extra = base_builder(root, m)
            .allowlist_function(funcs)
            .allowlist_recursively(false)
            .layout_tests(false)
            .dynamic_library_name(name)
            .generate()
            .unwrap_or_else(|e| panic!("bindgen (extra) failed for {}: {e}", m.name))
            .to_string();
        let extra: String = extra
            .lines()
            .filter(|l| !l.starts_with("/* automatically generated by rust-bindgen"))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push('\n');
        text.push_str(&extra);
    }

    let path = out_dir.join(format!("{}.rs", m.name));
    std::fs::write(&path, text).expect("write output");
    eprintln!("gen-abi: {}", path.display());
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [root, out_dir, pins] = args.as_slice() else {
        eprintln!("usage: gen-abi <header-root> <out-dir> <abi-wheels.txt>");
        std::process::exit(2);
    };
    let pins = pinned_versions(pins);
    let only: Option<String> = std::env::var("GEN_ABI_ONLY").ok();
    for m in modules() {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|x| x == m.name))
        {
            continue;
        }
        generate(root, out_dir, &pins, &m);
    }
}

//! `docs/coverage.md`: one section per library, each written by that shim's own test from
//! what its build recorded, between `<!-- BEGIN coverage:SONAME -->` and
//! `<!-- END coverage:SONAME -->`. Text outside the markers is left alone.
//!
//! `cargo test -p <shim>` fails when its section is stale or missing;
//! `VGPU_BLESS=1 cargo test -p <shim>` rewrites it.

use std::fmt::Write as _;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::PathBuf;

use crate::Recorded;
use crate::stubs::Plan;

/// The environment variable that makes the test rewrite the document.
pub const BLESS_VAR: &str = "VGPU_BLESS";

/// Section order in the document; a library not named here goes last.
pub const ORDER: &[&str] = &[
    "libnvidia-ml.so.1",
    "libcuda.so.1",
    "libcudart.so.13",
    "libcudart.so.12",
    "libcublas.so.13",
    "libcublas.so.12",
    "libcublasLt.so.13",
    "libcublasLt.so.12",
];

/// Every shim package, for the hint printed on failure.
pub const PACKAGES: &str = "-p shim-nvml -p shim-cuda -p shim-cudart13 -p shim-cudart12 -p shim-cublas13 -p shim-cublas12 -p shim-cublaslt13 -p shim-cublaslt12";

/// `docs/coverage.md` in the workspace.
pub fn doc_path() -> PathBuf {
    crate::workspace_root().join("docs/coverage.md")
}

fn begin(lib: &str) -> String {
    format!("<!-- BEGIN coverage:{lib} -->")
}
fn end(lib: &str) -> String {
    format!("<!-- END coverage:{lib} -->")
}

/// The head of a new document (only used when the file does not exist yet).
pub fn new_document() -> String {
    format!(
        "# API coverage of the vgpu shims\n\n\
         Generated; do not edit between the markers. Each section is written by its shim's export \
         test from what `crates/shim-build` found while building it: a name is *implemented* when \
         the shim's sources define it by hand; every other exported function is a generated stub \
         that logs `vgpu: NAME is not implemented (returns not-supported)` once and returns the \
         API's \"not supported\" code. `cargo test` fails when a section is stale; regenerate \
         with\n\n    VGPU_BLESS=1 cargo test {PACKAGES}\n\n\
         The export lists (`crates/abi/exports/`) are the defined dynamic symbols \
         (`readelf -W --dyn-syms`) of NVIDIA's libraries: libcuda.so.1 and libnvidia-ml.so.1 of \
         driver 580; libcudart.so.13 13.0.96 and libcudart.so.12 12.9.79; libcublas.so.13 and \
         libcublasLt.so.13 of CUDA 13.0 (identical in cuBLAS 13.1.0.3); libcublas.so.12 and \
         libcublasLt.so.12 of cuBLAS 12.9.1.4 (`nvidia-cublas-cu12` 12.9.1.4, read from the \
         library itself, not derived from the 13 lists: 12 lacks 10 names of libcublas 13, and \
         libcublasLt 12 has 5 names that 13 dropped and lacks 9 that 13 added).\n\n"
    )
}

/// The section for one library.
pub fn section(rec: &Recorded, plan: &Plan) -> String {
    let mut s = String::new();
    let lib = &rec.soname;
    let _ = writeln!(s, "{}", begin(lib));
    let _ = writeln!(s, "## {lib}\n");
    let versions =
        if rec.versioned { format!("every symbol versioned `@@{lib}`") } else { "no symbol versions".to_owned() };
    let _ = writeln!(s, "Package `{}`; SONAME `{lib}`; {versions}; export list `{}`.\n", rec.package, rec.exports_rel);
    let total = plan.total();
    let pct = if total == 0 { 0.0 } else { 100.0 * plan.implemented.len() as f64 / total as f64 };
    let _ = writeln!(s, "| exported | implemented | not supported (returns {}) | data objects |", rec.stub_return);
    let _ = writeln!(s, "| ---: | ---: | ---: | ---: |");
    let _ = writeln!(
        s,
        "| {total} | {} ({pct:.1} %) | {} | {} |\n",
        plan.implemented.len(),
        plan.stubs.len(),
        plan.data.len()
    );
    let _ = writeln!(s, "### Implemented ({})\n", plan.implemented.len());
    if plan.implemented.is_empty() {
        let _ = writeln!(s, "(none)\n");
    } else {
        for n in &plan.implemented {
            let _ = writeln!(s, "- `{n}`");
        }
        s.push('\n');
    }
    if !plan.data.is_empty() {
        let _ = writeln!(s, "### Data objects ({}), zero-initialised\n", plan.data.len());
        for (n, size) in &plan.data {
            let _ = writeln!(s, "- `{n}` ({size} bytes)");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "### Not supported ({})\n", plan.stubs.len());
    if plan.stubs.is_empty() {
        let _ = writeln!(s, "(none)\n");
    } else {
        let _ = writeln!(s, "<details><summary>{} names</summary>\n", plan.stubs.len());
        for n in &plan.stubs {
            let _ = writeln!(s, "- `{n}`");
        }
        let _ = writeln!(s, "\n</details>\n");
    }
    let _ = writeln!(s, "{}", end(lib));
    s
}

/// The current section for `lib` in `doc` (markers included, with the newline after the end
/// marker), if any.
pub fn extract<'d>(doc: &'d str, lib: &str) -> Option<&'d str> {
    let (b, e) = span(doc, lib)?;
    Some(&doc[b..e])
}

fn span(doc: &str, lib: &str) -> Option<(usize, usize)> {
    let b = doc.find(&begin(lib))?;
    let end_marker = end(lib);
    let e = b + doc[b..].find(&end_marker)? + end_marker.len();
    let e = if doc[e..].starts_with('\n') { e + 1 } else { e };
    Some((b, e))
}

/// `doc` with `lib`'s section replaced by `section`, or inserted before the first section
/// that comes later in [`ORDER`] (or at the end).
pub fn splice(doc: &str, lib: &str, section: &str) -> String {
    if let Some((b, e)) = span(doc, lib) {
        return format!("{}{}{}", &doc[..b], section, &doc[e..]);
    }
    let rank = |l: &str| ORDER.iter().position(|x| *x == l).unwrap_or(ORDER.len());
    let mine = rank(lib);
    let insert_at = ORDER.iter().filter(|l| rank(l) > mine).filter_map(|l| doc.find(&begin(l))).min();
    match insert_at {
        Some(at) => format!("{}{}\n{}", &doc[..at], section, &doc[at..]),
        None => {
            let mut d = doc.to_owned();
            if !d.is_empty() && !d.ends_with("\n\n") {
                d.push_str(if d.ends_with('\n') { "\n" } else { "\n\n" });
            }
            d.push_str(section);
            d
        }
    }
}

/// Compare `lib`'s section of `docs/coverage.md` with `section`; with `VGPU_BLESS=1` rewrite
/// it instead (under an exclusive lock on the file, since shim tests may run in parallel).
pub fn check_or_bless(lib: &str, package: &str, section: &str) -> Result<(), String> {
    let path = doc_path();
    let bless = std::env::var(BLESS_VAR).is_ok_and(|v| !v.is_empty() && v != "0");
    if bless {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.lock().map_err(|e| format!("lock {}: {e}", path.display()))?;
        let mut doc = String::new();
        f.read_to_string(&mut doc).map_err(|e| format!("{}: {e}", path.display()))?;
        if doc.trim().is_empty() {
            doc = new_document();
        }
        let new = splice(&doc, lib, section);
        if new != doc {
            f.set_len(0)
                .and_then(|_| f.rewind())
                .and_then(|_| f.write_all(new.as_bytes()))
                .map_err(|e| format!("write {}: {e}", path.display()))?;
        }
        return Ok(());
    }
    let hint = format!(
        "regenerate it with `{BLESS_VAR}=1 cargo test -p {package}` (all shims: `{BLESS_VAR}=1 cargo test {PACKAGES}`)"
    );
    let doc = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}; {hint}", path.display()))?;
    match extract(&doc, lib) {
        None => Err(format!("{} has no section for {lib}; {hint}", path.display())),
        Some(cur) if cur == section => Ok(()),
        Some(cur) => {
            let first_diff = cur
                .lines()
                .zip(section.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(cur.lines().count().min(section.lines().count()));
            let got = cur.lines().nth(first_diff).unwrap_or("<end>");
            let want = section.lines().nth(first_diff).unwrap_or("<end>");
            Err(format!(
                "{}: the section for {lib} is stale (first difference at its line {}: document has {got:?}, build says {want:?}); {hint}",
                path.display(),
                first_diff + 1
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(lib: &str) -> Recorded {
        Recorded {
            package: "shim-x".into(),
            lib: "shim_x".into(),
            soname: lib.into(),
            versioned: lib.contains("cudart"),
            exports: "/x".into(),
            exports_rel: format!("crates/abi/exports/{lib}.exports"),
            stub_return: "801".into(),
            stub_type: "u32".into(),
            data: vec![],
        }
    }

    fn plan() -> Plan {
        Plan { implemented: vec!["a".into()], stubs: vec!["b".into(), "c".into()], data: vec![("d".into(), 8)] }
    }

    #[test]
    fn section_shape() {
        let s = section(&rec("libcudart.so.13"), &plan());
        assert!(s.starts_with("<!-- BEGIN coverage:libcudart.so.13 -->\n## libcudart.so.13\n"));
        assert!(s.ends_with("<!-- END coverage:libcudart.so.13 -->\n"));
        assert!(s.contains("| 4 | 1 (25.0 %) | 2 | 1 |"));
        assert!(s.contains("`@@libcudart.so.13`"));
        assert!(s.contains("- `d` (8 bytes)"));
    }

    #[test]
    fn splice_orders_and_replaces() {
        let p = plan();
        let mut doc = new_document();
        for lib in ["libcublas.so.13", "libcuda.so.1", "libcudart.so.12", "libnvidia-ml.so.1", "libcudart.so.13"] {
            doc = splice(&doc, lib, &section(&rec(lib), &p));
        }
        let pos = |l: &str| doc.find(&begin(l)).unwrap();
        assert!(doc.starts_with("# API coverage"));
        assert!(pos("libnvidia-ml.so.1") < pos("libcuda.so.1"));
        assert!(pos("libcuda.so.1") < pos("libcudart.so.13"));
        assert!(pos("libcudart.so.13") < pos("libcudart.so.12"));
        assert!(pos("libcudart.so.12") < pos("libcublas.so.13"));
        // replacing is idempotent and touches only that section
        let again = splice(&doc, "libcuda.so.1", &section(&rec("libcuda.so.1"), &p));
        assert_eq!(again, doc);
        let changed = splice(&doc, "libcuda.so.1", &section(&rec("libcuda.so.1"), &Plan::default()));
        assert_ne!(changed, doc);
        assert_eq!(extract(&changed, "libcudart.so.13"), extract(&doc, "libcudart.so.13"));
        assert_eq!(extract(&changed, "libcuda.so.1").unwrap(), section(&rec("libcuda.so.1"), &Plan::default()));
    }
}

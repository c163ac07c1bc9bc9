//! docs/configuration.md names every setting the code reads, and only those: a variable
//! added without a line there, or one removed from the code but not from the page, fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files under `dir` whose names end in one of `exts`, skipping build output.
fn files(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                files(&p, exts, out);
            }
        } else if exts.iter().any(|x| p.extension().is_some_and(|e| e == *x)) {
            out.push(p);
        }
    }
}

/// Every `VGPU_NAME` in `text` (a name: capitals, digits and `_`, not ending in `_`).
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("VGPU_") {
        let tail = &rest[i..];
        let n = tail
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .map_or(tail.len(), |(j, _)| j);
        let name = tail[..n].trim_end_matches('_');
        if name.len() > "VGPU_".len() {
            out.insert(name.to_string());
        }
        rest = &tail[n.max(5)..];
    }
    out
}

/// The `VGPU_` variables the Rust code reads: string literals naming one.
fn read_by_code() -> BTreeSet<String> {
    let mut srcs = Vec::new();
    for d in ["crates", "shims", "src"] {
        files(&root().join(d), &["rs"], &mut srcs);
    }
    let mut out = BTreeSet::new();
    for f in srcs {
        let text = std::fs::read_to_string(&f).unwrap();
        for n in names(&text) {
            if text.contains(&format!("\"{n}\"")) {
                out.insert(n);
            }
        }
    }
    out
}

fn page() -> String {
    std::fs::read_to_string(root().join("docs/configuration.md")).unwrap()
}

#[test]
fn every_variable_the_code_reads_is_documented() {
    let page = page();
    let missing: Vec<_> = read_by_code().into_iter().filter(|n| !page.contains(&format!("`{n}`"))).collect();
    assert!(missing.is_empty(), "docs/configuration.md does not name {missing:?}");
}

#[test]
fn every_documented_variable_is_read_somewhere() {
    // The scripts read a few (VGPU_VM_TEST); the Rust code reads the rest.
    let mut read = read_by_code();
    let mut scripts = Vec::new();
    files(&root().join("scripts"), &["sh"], &mut scripts);
    for f in scripts {
        read.extend(names(&std::fs::read_to_string(f).unwrap()));
    }
    let stale: Vec<_> = names(&page()).into_iter().filter(|n| !read.contains(n)).collect();
    assert!(stale.is_empty(), "docs/configuration.md names {stale:?}, which nothing reads");
}

#[test]
fn every_client_file_key_is_documented() {
    // The keys are the fields of `struct File` in the client's configuration.
    let src = std::fs::read_to_string(root().join("crates/client/src/config.rs")).unwrap();
    let body = src.split("struct File {").nth(1).and_then(|s| s.split('}').next()).expect("struct File");
    let keys: Vec<&str> = body.lines().filter_map(|l| l.trim().split_once(':')).map(|(k, _)| k).collect();
    assert!(keys.contains(&"server") && keys.len() >= 10, "parsed {keys:?}");
    let page = page();
    let missing: Vec<_> = keys.iter().filter(|k| !page.contains(&format!("| `{k}` |"))).collect();
    assert!(missing.is_empty(), "docs/configuration.md has no client.toml row for {missing:?}");
}

#[test]
fn names_are_found() {
    let got = names("a VGPU_LOG=debug, \"VGPU_SHM_MB\" and VGPU_ alone; VGPU_X_");
    assert_eq!(got.into_iter().collect::<Vec<_>>(), ["VGPU_LOG", "VGPU_SHM_MB", "VGPU_X"]);
}

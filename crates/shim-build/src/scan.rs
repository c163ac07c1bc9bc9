//! Finds the names a shim defines by hand, so that no stub is generated for them.
//!
//! A name counts as defined when a `.rs` file under the scanned directories contains, outside
//! comments and string literals,
//! * `fn NAME` (a hand-written `#[unsafe(no_mangle)] pub extern "C" fn NAME(...)`, or an
//!   entry `fn NAME(...)` of a declaration-table macro that generates the export), or
//! * `static NAME` / `static mut NAME` (a data export),
//!
//! or a line comment `// shim-build: defines NAME NAME2 ...` names it (for macros whose
//! invocation does not spell `fn NAME`). Only names in the export list matter; everything
//! else found is ignored. The scan is deliberately simple: the export test is the safety net
//! (a name seen here but not actually exported shows up there as missing, and a real
//! definition missed here is a duplicate-symbol compile error).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The marker comment's prefix.
pub const MARKER: &str = "shim-build: defines";

/// Scan every `.rs` file under `dirs` (recursively; missing directories are an error).
pub fn scan_dirs(dirs: impl IntoIterator<Item = PathBuf>) -> Result<BTreeSet<String>, String> {
    let mut files = Vec::new();
    for d in dirs {
        if !d.exists() {
            return Err(format!("source directory {} does not exist", d.display()));
        }
        collect(&d, &mut files)?;
    }
    files.sort();
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        out.extend(scan_source(&text));
    }
    Ok(out)
}

fn collect(p: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    if p.is_file() {
        if p.extension().is_some_and(|e| e == "rs") {
            files.push(p.to_path_buf());
        }
        return Ok(());
    }
    let rd = std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))?;
    for e in rd {
        let e = e.map_err(|e| format!("{}: {e}", p.display()))?;
        collect(&e.path(), files)?;
    }
    Ok(())
}

/// Names defined in one source text (see the module docs).
pub fn scan_source(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let idents = tokens(src, &mut out);
    for (i, t) in idents.iter().enumerate() {
        match t.as_str() {
            "fn" => {
                if let Some(n) = idents.get(i + 1).filter(|n| !n.is_empty()) {
                    out.insert(n.clone());
                }
            }
            "static" => {
                let n = match idents.get(i + 1).map(String::as_str) {
                    Some("mut") => idents.get(i + 2),
                    _ => idents.get(i + 1),
                };
                if let Some(n) = n.filter(|n| !n.is_empty()) {
                    out.insert(n.clone());
                }
            }
            _ => {}
        }
    }
    out.retain(|n| !is_keyword(n));
    out
}

fn is_keyword(s: &str) -> bool {
    matches!(s, "fn" | "mut" | "static" | "unsafe" | "extern" | "pub" | "const" | "ref" | "self" | "Self")
}

/// Split into a stream where each item is an identifier/keyword or "" for a punctuation
/// boundary (so that `fn` followed by `(` does not pair with a later word). Comments and
/// string/char literals are skipped; marker comments add their names to `marked`.
fn tokens(src: &str, marked: &mut BTreeSet<String>) -> Vec<String> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let n = c.len();
    while i < n {
        let ch = c[i];
        if ch == '/' && c.get(i + 1) == Some(&'/') {
            let end = (i..n).find(|&j| c[j] == '\n').unwrap_or(n);
            let line: String = c[i + 2..end].iter().collect();
            let body = line.trim_start_matches(['/', '!']).trim();
            if let Some(rest) = body.strip_prefix(MARKER) {
                for name in rest.split(|ch: char| ch.is_whitespace() || ch == ',') {
                    if crate::exports::is_c_identifier(name) {
                        marked.insert(name.to_owned());
                    }
                }
            }
            i = end;
            continue;
        }
        if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 1;
            i += 2;
            while i < n && depth > 0 {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                } else {
                    i += 1;
                }
            }
            out.push(String::new());
            continue;
        }
        if ch == '"' {
            i = skip_string(&c, i + 1);
            out.push(String::new());
            continue;
        }
        if ch == '\'' {
            // char literal ('x', '\n', '\u{..}') or a lifetime ('a)
            if c.get(i + 1) == Some(&'\\') {
                let mut j = i + 2;
                while j < n && c[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
            out.push(String::new());
            continue;
        }
        if ch == '_' || ch.is_alphabetic() {
            let start = i;
            while i < n && (c[i] == '_' || c[i].is_alphanumeric()) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            // raw strings r"..", r#".."#, br"..", and raw identifiers r#name
            if (word == "r" || word == "br" || word == "cr") && i < n && (c[i] == '"' || c[i] == '#') {
                let mut hashes = 0;
                while i < n && c[i] == '#' {
                    hashes += 1;
                    i += 1;
                }
                if i < n && c[i] == '"' {
                    i = skip_raw_string(&c, i + 1, hashes);
                    out.push(String::new());
                    continue;
                }
                // r#ident: the identifier follows
                continue;
            }
            if (word == "b" || word == "c") && i < n && c[i] == '"' {
                continue; // the string itself is skipped on the next turn
            }
            if word == "b" && i < n && c[i] == '\'' {
                continue;
            }
            out.push(word);
            continue;
        }
        if !ch.is_whitespace() {
            out.push(String::new());
        }
        i += 1;
    }
    out
}

fn skip_string(c: &[char], mut i: usize) -> usize {
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

fn skip_raw_string(c: &[char], mut i: usize, hashes: usize) -> usize {
    while i < c.len() {
        if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(src: &str) -> Vec<String> {
        scan_source(src).into_iter().collect()
    }

    #[test]
    fn finds_functions_and_statics() {
        let src = r#"
            #[unsafe(no_mangle)]
            pub extern "C" fn cudaMalloc(p: *mut *mut u8, n: usize) -> u32 { 0 }
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn cudaFree(p: *mut u8) -> u32 { 0 }
            #[unsafe(no_mangle)] pub static mut cudbgSessionId: u32 = 0;
            #[unsafe(no_mangle)] pub static cudbgIpcFlag: u32 = 0;
            forward! {
                fn cuMemAlloc_v2(dptr: out DevPtr, size: usize) -> CUresult;
            }
            fn helper<'a>(x: &'a str) -> char { 'x' }
        "#;
        assert_eq!(names(src), ["cuMemAlloc_v2", "cudaFree", "cudaMalloc", "cudbgIpcFlag", "cudbgSessionId", "helper"]);
    }

    #[test]
    fn ignores_comments_and_strings() {
        let src = r####"
            // fn inLineComment() {}
            /* fn inBlock() { /* nested fn inNested */ } */
            /// docs mention fn inDocs
            const S: &str = "fn inString() \" fn inString2";
            const R: &str = r#"fn inRaw "quoted" fn inRaw2"#;
            const B: &[u8] = b"fn inBytes";
            const C: char = '"';
            fn real() {}
            fn r#raw_ident() {}
        "####;
        assert_eq!(names(src), ["raw_ident", "real"]);
    }

    #[test]
    fn marker_comments() {
        let src = "// shim-build: defines cuA, cuB cuC\n//! shim-build: defines cuD\nmy_macro!(cuE);\n";
        assert_eq!(names(src), ["cuA", "cuB", "cuC", "cuD"]);
    }

    #[test]
    fn fn_pointer_types_do_not_count() {
        // `fn(` has no name after it
        assert!(names("type F = extern \"C\" fn(u32) -> u32; let f: fn() = g;").is_empty());
    }

    #[test]
    fn scan_dirs_recurses_and_rejects_missing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("a.rs"), "fn cuA() {}").unwrap();
        std::fs::write(d.path().join("sub/b.rs"), "fn cuB() {}").unwrap();
        std::fs::write(d.path().join("sub/c.txt"), "fn cuC() {}").unwrap();
        let got = scan_dirs([d.path().to_path_buf()]).unwrap();
        assert_eq!(got.into_iter().collect::<Vec<_>>(), ["cuA", "cuB"]);
        assert!(scan_dirs([d.path().join("nope")]).is_err());
    }
}

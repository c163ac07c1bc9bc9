#!/usr/bin/env bash
# Release build, laid out for installation:
#   dist/bin/vgpu
#   dist/lib/<the real library file names>   (libcuda.so.1, libcudart.so.13, ...)
# plus link-time symlinks (libcuda.so -> libcuda.so.1, ...). Everything is stripped with
# --strip-unneeded (keeps .dynsym and the symbol versions), and each library is checked
# afterwards against its export list (names, @@versions, SONAME).
#
# Usage: scripts/dist.sh [--skip-build]    (DIST=<dir> to lay out elsewhere than ./dist;
#        DIST_PROFILE=debug with --skip-build lays out what `cargo test` built instead)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
profile="${DIST_PROFILE:-release}"
out="$target/$profile"
dist="${DIST:-$root/dist}"
exports="$root/crates/abi/exports"

die() { echo "dist.sh: error: $*" >&2; exit 1; }
for tool in cargo strip readelf; do command -v "$tool" >/dev/null || die "$tool not found"; done

if [[ "${1:-}" != "--skip-build" ]]; then
    [[ "$profile" == release ]] || die "DIST_PROFILE=$profile is laid out with --skip-build only"
    echo "dist.sh: cargo build --release --workspace" >&2
    cargo build --release --workspace || die "release build failed (nothing laid out)"
fi

# cargo's file name -> the real library's file name (= its SONAME)
libs=(
    "libshim_nvml.so        libnvidia-ml.so.1"
    "libshim_cuda.so        libcuda.so.1"
    "libshim_cudart13.so    libcudart.so.13"
    "libshim_cudart12.so    libcudart.so.12"
    "libshim_cublas13.so    libcublas.so.13"
    "libshim_cublas12.so    libcublas.so.12"
    "libshim_cublaslt13.so  libcublasLt.so.13"
    "libshim_cublaslt12.so  libcublasLt.so.12"
)
# link-time names (only used by `-lcuda` style linking; the loader uses the SONAME)
links=(
    "libnvidia-ml.so  libnvidia-ml.so.1"
    "libcuda.so       libcuda.so.1"
    "libcudart.so     libcudart.so.13"
    "libcublas.so     libcublas.so.13"
    "libcublasLt.so   libcublasLt.so.13"
)

# A cdylib that the tests build as a dependency stays in deps/.
built() { if [[ -f "$out/$1" ]]; then echo "$out/$1"; else echo "$out/deps/$1"; fi; }
[[ -x "$out/vgpu" ]] || die "$out/vgpu was not built (does the root package build?)"
for pair in "${libs[@]}"; do
    read -r from _ <<<"$pair"
    [[ -f "$(built "$from")" ]] || die "$out/$from was not built"
done

rm -rf "$dist"
mkdir -p "$dist/bin" "$dist/lib"
install -m 0755 "$out/vgpu" "$dist/bin/vgpu"
strip --strip-unneeded "$dist/bin/vgpu"
for pair in "${libs[@]}"; do
    read -r from to <<<"$pair"
    install -m 0755 "$(built "$from")" "$dist/lib/$to"
    strip --strip-unneeded "$dist/lib/$to"
done
for pair in "${links[@]}"; do
    read -r name target_name <<<"$pair"
    ln -sfn "$target_name" "$dist/lib/$name"
done

# Verify: SONAME, version definitions, and defined dynamic symbols == the export list
# (a versioned list's lines are name@@node plus the bare node symbol; vgpu_* are our private
# ABI and may be added).
check() {
    local lib="$1" soname list got want extra missing
    soname="$(basename "$lib")"
    list="$exports/$soname.exports"
    [[ -f "$list" ]] || die "no export list $list"
    local dynamic versions
    dynamic="$(readelf -d "$lib")"
    versions="$(readelf -V "$lib")"
    grep -qF "Library soname: [$soname]" <<<"$dynamic" || die "$lib: SONAME is not $soname"
    got="$(readelf -W --dyn-syms "$lib" | awk 'NR > 3 && $7 != "UND" && $8 != "" { print $8 }' \
        | sed -E 's/^([^@]+)@@\1$/\1/' | grep -v '^vgpu_' | LC_ALL=C sort)"
    want="$(grep -vE '^\s*(#|$)' "$list" | LC_ALL=C sort)"
    if [[ "$got" != "$want" ]]; then
        extra="$(comm -23 <(echo "$got") <(echo "$want") | head -20 | tr '\n' ' ')"
        missing="$(comm -13 <(echo "$got") <(echo "$want") | head -20 | tr '\n' ' ')"
        die "$lib does not match $list; extra: ${extra:-none}; missing: ${missing:-none}"
    fi
    if grep -q '@@' "$list"; then
        grep -qE "Index: 2 .*Name: ${soname//./\\.}\$" <<<"$versions" || die "$lib: version node $soname lost"
    elif grep -q 'Version definition' <<<"$versions"; then
        die "$lib: has version definitions, the real one has none"
    fi
}
for pair in "${libs[@]}"; do
    read -r _ to <<<"$pair"
    check "$dist/lib/$to"
done

echo "dist.sh: laid out in $dist (stripped; exports, versions and SONAMEs checked):"
( cd "$dist" && find . -mindepth 2 \( -type f -o -type l \) | LC_ALL=C sort | while read -r f; do
    if [[ -L "$f" ]]; then
        printf '  %-26s -> %s\n' "${f#./}" "$(readlink "$f")"
    else
        printf '  %-26s %8s KiB\n' "${f#./}" "$(( $(stat -c %s "$f") / 1024 ))"
    fi
done )

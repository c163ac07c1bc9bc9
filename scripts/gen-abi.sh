#!/usr/bin/env bash
# Regenerates crates/abi/src/{cuda,cudart13,cudart12,nvml,cublas13,cublas12}.rs with bindgen
# from the NVIDIA wheels pinned in scripts/abi-wheels.txt.
#
# Needs: python3 + pip (network access to PyPI), libclang (Debian: apt-get install -y libclang-dev),
# cargo + rustfmt. Headers and wheels stay in scratch/ (git-ignored): never commit them.
# Idempotent: wheels are reused when their hash matches, headers are re-extracted each run and
# the output is byte-for-byte identical for the same inputs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WHEELS="$ROOT/scratch/abi-wheels"
INC="$ROOT/scratch/abi-root"
OUT="$ROOT/crates/abi/src"
export CARGO_TARGET_DIR="${GEN_ABI_TARGET_DIR:-$ROOT/scratch/gen-target}"

mkdir -p "$WHEELS"
# The wheels are manylinux x86_64 only; name the platform so the hashes are the ones pinned.
python3 -m pip download --no-deps --require-hashes --only-binary=:all: \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
    -r scripts/abi-wheels.txt -d "$WHEELS"

# Extract only the headers (and licence texts) of the pinned wheels into one tree, laid out as
# pip would install them: nvidia/cu13/include (13.x), nvidia/{cuda_runtime,cuda_nvcc,cublas}/include (12.x).
rm -rf "$INC"
mkdir -p "$INC"
python3 - "$WHEELS" "$INC" scripts/abi-wheels.txt <<'PY'
import pathlib, re, sys, zipfile
wheels, dest, pins = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
want = []
for line in open(pins):
    m = re.match(r'\s*([A-Za-z0-9_.-]+)==([^\s]+)', line)
    if m:
        want.append((m.group(1).replace('-', '_').lower(), m.group(2)))
for name, ver in want:
    found = [w for w in wheels.glob('*.whl')
             if w.name.lower().startswith(f'{name}-{ver}-')]
    if len(found) != 1:
        sys.exit(f'gen-abi: expected one wheel for {name}=={ver}, found {found}')
    with zipfile.ZipFile(found[0]) as z:
        for m in z.namelist():
            if '/include/' in m or m.lower().endswith(('license.txt', '/license')):
                z.extract(m, dest)
PY

cargo build --release --quiet --manifest-path scripts/gen-abi/Cargo.toml
TMP="$ROOT/scratch/gen-abi-out"
rm -rf "$TMP"
mkdir -p "$TMP"
"$CARGO_TARGET_DIR/release/gen-abi" "$INC" "$TMP" scripts/abi-wheels.txt

# rustfmt, then replace only the files that changed (keeps mtimes, so cargo does not rebuild).
for f in cuda cudart13 cudart12 nvml cublas13 cublas12; do
    rustfmt --edition 2024 "$TMP/$f.rs"
    if cmp -s "$TMP/$f.rs" "$OUT/$f.rs"; then
        echo "gen-abi: $f.rs unchanged"
    else
        cp "$TMP/$f.rs" "$OUT/$f.rs"
        echo "gen-abi: wrote crates/abi/src/$f.rs"
    fi
done

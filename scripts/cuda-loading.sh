#!/usr/bin/env bash
# Prepares candle-core and candle-kernels, as published on crates.io at the versions Cargo.lock
# pins, to load the CUDA libraries at run time instead of linking them, and prints the cargo
# `--config` arguments that put them in place of the registry's copies.
#
#   eval "args=($(scripts/cuda-loading.sh DIR))"; cargo build "${args[@]}" --features cuda
#
# Why: candle-core 0.11 turns on cudarc's `dynamic-linking`, which records the build toolkit's
# sonames in the binary (libcudart.so.13, libcublas.so.13, libcurand.so.10, libcuda.so.1): the
# dynamic loader refuses to start it where any is missing (a machine without a GPU, or with the
# CUDA 12 libraries), before main. cudarc refuses `dynamic-loading` beside `dynamic-linking`, and
# features only add up, so the switch has to be made in candle-core's manifest. With it, cudarc
# opens libcuda, cuBLAS, cuRAND, NVRTC and cuDNN with dlopen on first use, trying the names of
# CUDA 13, 12 and 11 in turn (libcublas.so.13, .so.12, ...), and the binary starts anywhere.
#
# Two edits, each checked to apply exactly once (a new candle version that moved them fails here
# rather than building something else):
#   candle-core/Cargo.toml   cudarc's "dynamic-linking" feature becomes "dynamic-loading";
#   candle-kernels/build.rs  the precompiled MoE/GGUF kernels' runtime (which turbovsr never
#                            calls) is linked statically, libcudart_static.a from $CUDA_ROOT, in
#                            place of libcudart.so (static cudart finds the driver with dlopen).
# The sources themselves are the published ones, untouched; DIR (e.g. under the CUDA target
# folder) holds the unpacked copies.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:?usage: scripts/cuda-loading.sh DIR}"
: "${CUDA_ROOT:?CUDA_ROOT must name the toolkit (eval \"\$(scripts/cuda-toolkit.sh)\")}"
[ -f "$CUDA_ROOT/lib64/libcudart_static.a" ] || [ -f "$CUDA_ROOT/lib/libcudart_static.a" ] || {
  echo "cuda-loading: no libcudart_static.a under $CUDA_ROOT/lib64 or $CUDA_ROOT/lib" >&2
  exit 1
}

locked_version() {
  # the version Cargo.lock records for registry package $1
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}

# Replaces the single line $2 of file $1 by the lines in $3; fails unless $2 occurs exactly once.
replace_once() {
  local file="$1" old="$2" new="$3" n
  n="$(grep -cxF -- "$old" "$file" || true)"
  if [ "$n" != 1 ]; then
    echo "cuda-loading: expected one line '$old' in $file, found $n" >&2
    exit 1
  fi
  OLD="$old" NEW="$new" perl -0pi -e 's/^\Q$ENV{OLD}\E$/$ENV{NEW}/m' "$file"
}

# Unpacked and edited afresh each time, into DIR.new; DIR is replaced only when the result
# differs, so an unchanged DIR keeps its files' times and cargo its compiled candle (the
# kernels' nvcc pass is most of a cold CUDA build).
cargo fetch --locked >&2
rm -rf "$dir.new"
mkdir -p "$dir.new"
registry="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
for name in candle-core candle-kernels; do
  version="$(locked_version "$name")"
  [ -n "$version" ] || { echo "cuda-loading: $name is not in Cargo.lock" >&2; exit 1; }
  crate="$(ls "$registry"/*/"$name-$version.crate" 2>/dev/null | head -n1)"
  [ -n "$crate" ] || { echo "cuda-loading: $name-$version.crate is not in $registry" >&2; exit 1; }
  tar -xzf "$crate" -C "$dir.new"
  mv "$dir.new/$name-$version" "$dir.new/$name"
done
replace_once "$dir.new/candle-core/Cargo.toml" '    "dynamic-linking",' '    "dynamic-loading",'
replace_once "$dir.new/candle-kernels/build.rs" \
  '    println!("cargo:rustc-link-lib=dylib=cudart");' \
  "    println!(\"cargo:rustc-link-search=native=$CUDA_ROOT/lib64\");
    println!(\"cargo:rustc-link-search=native=$CUDA_ROOT/lib\");
    println!(\"cargo:rustc-link-lib=static=cudart_static\");
    println!(\"cargo:rustc-link-lib=dylib=dl\");
    println!(\"cargo:rustc-link-lib=dylib=rt\");
    println!(\"cargo:rustc-link-lib=dylib=pthread\");"
if diff -rq "$dir.new" "$dir" >/dev/null 2>&1; then
  rm -rf "$dir.new"
else
  rm -rf "$dir"
  mv "$dir.new" "$dir"
fi
for name in candle-core candle-kernels; do
  printf -- "--config %q " "patch.crates-io.$name.path=\"$dir/$name\""
done
echo

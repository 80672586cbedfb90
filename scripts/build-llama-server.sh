#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (CPU only, no curl) from the llama-cpp-python sdist on the package registry, which
# vendors the whole llama.cpp tree, into a cache folder outside the repository. Idempotent: a built binary is reused.
#   scripts/build-llama-server.sh [VERSION]      prints the binary's path on its last line
# Env: LLAMA_CPP_PYTHON_VERSION (or the argument; default: the newest the registry has), GPTZOO_LLAMA_CACHE
# (default ~/.cache/gptzoo/llama.cpp), JOBS (default 2). About 15 minutes on two busy cores; run it under `nice`.
set -euo pipefail

version="${1:-${LLAMA_CPP_PYTHON_VERSION:-}}"
cache="${GPTZOO_LLAMA_CACHE:-$HOME/.cache/gptzoo/llama.cpp}"
jobs="${JOBS:-2}"
pip="${PIP:-python3 -m pip}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [[ -n "$version" && -x "$cache/$version/bin/llama-server" ]]; then
  echo "$cache/$version/bin/llama-server"
  exit 0
fi

spec="llama-cpp-python${version:+==$version}"
# The sdist only (the registry's wheels, if any, would not carry the server); no dependencies; pip prepares its metadata in an isolated build env.
$pip download --quiet --no-binary :all: --no-deps -d "$work" "$spec" >&2
sdist="$(ls "$work"/llama_cpp_python-*.tar.gz)"
version="$(basename "$sdist" .tar.gz)"
version="${version#llama_cpp_python-}"
dest="$cache/$version"
if [[ -x "$dest/bin/llama-server" ]]; then
  echo "$dest/bin/llama-server"
  exit 0
fi

tar -xzf "$sdist" -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
[[ -f "$src/CMakeLists.txt" ]] || { echo "no vendored llama.cpp in $sdist" >&2; exit 1; }

build="$work/build"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF \
  -DGGML_VULKAN=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_SERVER=ON >&2
cmake --build "$build" --target llama-server -j"$jobs" >&2

# Install atomically: a half-copied binary must never look built.
mkdir -p "$cache"
stage="$(mktemp -d "$cache/.stage.XXXXXX")"
mkdir -p "$stage/bin"
cp "$build/bin/llama-server" "$stage/bin/"
rm -rf "$dest"
mv "$stage" "$dest"
echo "$dest/bin/llama-server"

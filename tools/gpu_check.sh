#!/usr/bin/env bash
# The GPU check: one command on a bare GPU machine (no network; torch, timm,
# transformers and accelerate installed), within 8 minutes.
#
#   tools/gpu_wheels.sh              # here, with network: wheels into .whl/
#   tools/gpu_check.sh OUT_DIR       # there, from the repository root
#
# Installs the wheels of .whl/ (DeepSpeed, submitit, open_clip, ...) into a
# folder of its own, runs the tests marked `gpu` (training through the train
# stage's engine code on the GPU in bf16, checkpoint and exact resume,
# evaluation on the GPU) and tools/bench_train.py on ViT-B/16 in bf16
# (fraction of the GPU's bf16 peak; goal >= 40%), and writes every figure to
# OUT_DIR/gpu_check.json (tests: OUT_DIR/gpu_tests.xml, a JUnit report).
# Where FFCV cannot be built (it is not among the wheels: it compiles), the
# tests that need it say so and the others feed the same objective and engine
# from in-memory tensors.
set -uo pipefail
OUT=${1:?usage: tools/gpu_check.sh OUT_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SITE=${SYNSCALE_SITE:-/tmp/synscale-site}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || { echo "gpu_check: installing .whl/ failed" >&2; exit 1; }
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export DS_ACCELERATOR=cuda PYTHONUNBUFFERED=1
start=$(date +%s)

timeout 330 "$PY" -m pytest -q -m gpu -p no:cacheprovider --junitxml "$OUT/gpu_tests.xml" tests \
  2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
timeout 150 "$PY" tools/bench_train.py --arch vit_base_patch16_224 --precision bf16 \
  --batch 128 --steps 20 --json > "$OUT/bench_train.json" 2> "$OUT/bench_train.err"
bench_rc=$?

"$PY" - "$OUT" "$tests_rc" "$bench_rc" "$start" <<'PY'
import importlib.util, json, pathlib, sys, time
import xml.etree.ElementTree as ET

out, tests_rc, bench_rc, start = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
import torch
report = {"torch": torch.__version__, "cuda": torch.version.cuda,
          "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
          "have": {m: importlib.util.find_spec(m) is not None
                   for m in ("deepspeed", "ffcv", "open_clip", "submitit", "diffusers")},
          "tests_exit": tests_rc, "bench_exit": bench_rc, "seconds": round(time.time() - start)}
try:
    suite = ET.parse(out / "gpu_tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    report["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    report["test_times_s"] = {c.get("name"): float(c.get("time", 0)) for c in suite.iter("testcase")}
except (OSError, ET.ParseError, IndexError) as e:
    report["tests"] = f"no report: {e}"
try:
    report["bench_train"] = json.loads((out / "bench_train.json").read_text())
except (OSError, ValueError):
    report["bench_train"] = (out / "bench_train.err").read_text()[-2000:]
(out / "gpu_check.json").write_text(json.dumps(report, indent=1))
print(json.dumps(report, indent=1))
PY
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]

#!/usr/bin/env bash
# GPU checks of the fast backend in one go, on a CUDA machine with torch and no internet.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# Installs the project's other needs from the wheels in .whl/ beside the repo root (if the
# folder exists), then runs, each step under `timeout` (worst case about 6.5 minutes):
#   1. pytest -m gpu (every test file)      -> OUT_DIR/pytest_gpu.log        (75 s)
#   2. bench_generate 186x248 exact vs fast -> OUT_DIR/bench_small.json      (50 s)
#   3. bench_generate 1024^2, 4096^2 fast   -> OUT_DIR/bench_large.json      (90 s)
#   4. bench_fidelity, 10 refs, full size   -> OUT_DIR/fidelity_gpu.json    (100 s)
#   5. bench_tiled 8192^2 (pipeline smoke)  -> OUT_DIR/tiled_gpu.json        (60 s)
# References come from $GIGAPATCH_DATA (default ../shared/data beside the repo).
# Targets (issue 4): 1024^2 <= 1 s, 4096^2 <= 15 s, seconds_per_mpixel about constant.
# A step that fails or times out is recorded in OUT_DIR/status.txt; the others still run.
set -u
OUT="${1:?usage: gpu_check.sh OUT_DIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
ROOT="$PWD"
if compgen -G "$ROOT/.whl/*.whl" > /dev/null; then
  timeout 120 python -m pip install --no-index --no-deps --target /tmp/site "$ROOT"/.whl/*.whl \
    > "$OUT/pip.log" 2>&1 || echo "pip install failed (see pip.log)" >> "$OUT/status.txt"
  export PYTHONPATH="/tmp/site:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export GIGAPATCH_BENCH_CACHE="${GIGAPATCH_BENCH_CACHE:-/tmp/gigapatch-bench-cache}"
(nvidia-smi; python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))") \
  > "$OUT/device.txt" 2>&1

step() {  # step NAME SECONDS CMD...
  local name="$1" secs="$2"; shift 2
  local t0=$SECONDS
  timeout --kill-after=10 "$secs" "$@"
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - t0))" | tee -a "$OUT/status.txt"
}

GPU_SET=(--set denoiser.memory_budget_mb=8192 --set denoiser.index_budget_mb=16384)
step pytest_gpu 75 python -m pytest -q -m gpu -p no:cacheprovider \
  > "$OUT/pytest_gpu.log" 2>&1
step bench_small 50 python benchmarks/bench_generate.py --device cuda --backends exact fast \
  --repeats 3 "${GPU_SET[@]}" --out "$OUT/bench_small.json" > /dev/null 2> "$OUT/bench_small.log"
step bench_large 90 python benchmarks/bench_generate.py --device cuda --backends fast \
  --sizes 1024x1024 2048x2048 4096x4096 --repeats 2 "${GPU_SET[@]}" \
  --out "$OUT/bench_large.json" > /dev/null 2> "$OUT/bench_large.log"
step fidelity 100 python benchmarks/bench_fidelity.py --device cuda --scale 1.0 --seeds 0 1 \
  "${GPU_SET[@]}" --out "$OUT/fidelity_gpu.json" > /dev/null 2> "$OUT/fidelity_gpu.log"
step tiled 60 python benchmarks/bench_tiled.py --device cuda --size 8192x8192 \
  --json "$OUT/tiled_gpu.json" > "$OUT/tiled_gpu.log" 2>&1
cat "$OUT/status.txt"

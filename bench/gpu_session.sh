#!/usr/bin/env bash
# What a session with a lent GPU runs, in stages that each fit one device call (at most 10 minutes).
#
#   here, once:   bash tools/fetch_gpu_wheels.sh          # wheels -> .whl/, MNIST + ImageNet sample -> .data/
#   device calls: bash bench/gpu_session.sh build test     # carry: [".whl", ".data"]
#                 bash bench/gpu_session.sh ops attacks
#                 bash bench/gpu_session.sh minnorm labeler eval
#
# A call may land on a fresh machine, so every call first installs the carried wheels and builds the
# extension with its CUDA kernels (FORCE_CUDA=1; ninja rebuilds nothing on a machine still warm). Results go to
# bench/results/<machine label>/ (bench/harness.py: the GPU's name for CUDA rows, cpu-<cores>core for CPU rows)
# and, when the device tool's $OUT is set, are copied there to come back.
# Commit them from here afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# foolbox imports GitPython, which refuses to import without a git binary unless told to stay quiet
export GIT_PYTHON_REFRESH=quiet
PY=${PYTHON:-python3}

setup() {
  if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
  fi
  FORCE_CUDA=1 $PY setup.py -q build_ext --inplace
  $PY -c "import robustkit; print('robustkit', robustkit.__version__, robustkit.build_info())"
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv || true
}

collect() {
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/results"
    cp -r bench/results/. "$OUT/results/"
  fi
}
trap collect EXIT

[ $# -gt 0 ] || { sed -n '2,11p' "$0"; exit 2; }
setup
for stage in "$@"; do
  echo "=== $stage"
  case "$stage" in
    build) ;;  # setup above is the build
    test) $PY -m pytest -q -m cuda -p no:cacheprovider ;;
    ops) $PY bench/ops.py && $PY bench/conv_input_grad.py --device cuda ;;
    attacks) $PY bench/attacks.py --gpu ;;
    minnorm) $PY bench/minnorm_gpu.py ;;
    labeler) $PY bench/labeler.py --device cuda --datasets mnist --data .data ;;
    eval) $PY bench/eval_throughput.py --device cuda --image-size 224 --images 512 --batch-size 128 ;;
    *) echo "unknown stage $stage (build test ops attacks minnorm labeler eval)"; exit 2 ;;
  esac
done

#!/usr/bin/env bash
# The GPU check of gn_detection (`make gpu-check`), for a machine whose Python
# already has torch with CUDA: no virtual environment, no network, detectron2
# optional. In order, each step logged into one folder:
#   1. the machine: torch, CUDA, the GPU, nvcc, cores (environment.txt);
#   2. the extension built in place (gn_detection/_C*.so) for this GPU's own
#      architecture (TORCH_CUDA_ARCH_LIST from torch.cuda.get_device_capability,
#      MAX_JOBS = the core count) (build.log);
#   3. the op tests on CUDA: every test case with the cuda device, and the
#      import of the op without detectron2 (op_tests_cuda.log, op_tests_cuda.xml);
#   4. tools/benchmark_gn.py --device cuda (benchmark_gn_cuda.log, .json);
#   5. when detectron2 imports, tools/benchmark_model.py --device cuda --amp bf16
#      (benchmark_model_cuda.log, .json).
# summary.txt gives each step's status and seconds. The whole check ends within
# GN_CHECK_SECONDS (default 480): each step may use what the earlier ones left,
# and a step with under a minute left is skipped, with the reason.
#
#   PYTHON=python3 GN_CHECK_OUT=output/gpu_check GN_CHECK_SECONDS=480 tools/gpu_check.sh
#
# Exit status: 0 when every step that ran passed, 1 when one failed, 2 when
# there is no CUDA GPU (it stops before building anything).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
OUT=${GN_CHECK_OUT:-output/gpu_check}
BUDGET=${GN_CHECK_SECONDS:-480}
START=$SECONDS
FAILED=0
mkdir -p "$OUT"
: >"$OUT/summary.txt"

note() { echo "gpu-check: $*" | tee -a "$OUT/summary.txt"; }

# Runs step $1 (log file $2) with the time the budget has left; records the outcome.
step() {
  local name=$1 log=$2
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  if ((left < 60)); then
    note "$name: SKIPPED, ${left}s of the ${BUDGET}s budget left"
    FAILED=1
    return 1
  fi
  local begin=$SECONDS
  timeout --kill-after=10 "$left" "$@" >"$OUT/$log" 2>&1
  local rc=$?
  local took=$((SECONDS - begin))
  if ((rc == 0)); then
    note "$name: passed in ${took}s ($OUT/$log)"
  elif ((rc == 124 || rc == 137)); then
    note "$name: STOPPED at the budget's end after ${took}s ($OUT/$log)"
    FAILED=1
  else
    note "$name: FAILED (exit $rc) after ${took}s; the end of $OUT/$log:"
    tail -n 25 "$OUT/$log" | sed 's/^/    /' | tee -a "$OUT/summary.txt"
    FAILED=1
  fi
  return $rc
}

if ! command -v "$PYTHON" >/dev/null; then
  note "no Python at '$PYTHON' (set PYTHON to the Python that has torch with CUDA)"
  exit 2
fi
if ! gpu=$("$PYTHON" - <<'EOF' 2>&1
import sys
try:
    import torch
except ImportError as error:
    raise SystemExit(f"{sys.executable} cannot import torch ({error}); set PYTHON to the Python that has torch")
if torch.version.cuda is None:
    raise SystemExit(f"torch {torch.__version__} is built without CUDA")
if not torch.cuda.is_available():
    raise SystemExit(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA GPU")
print(f"{torch.cuda.get_device_name(0)}, compute capability {'.'.join(map(str, torch.cuda.get_device_capability(0)))}")
EOF
); then
  note "stopped before building: ${gpu##*$'\n'}. This check needs torch with CUDA and a GPU; without one, run 'make test'."
  exit 2
fi
note "GPU: $gpu"

# 1. The machine.
{
  "$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
  command -v nvcc >/dev/null && nvcc --version | tail -n 2
  echo "cores: $(nproc)"
  command -v nvidia-smi >/dev/null && nvidia-smi
} >"$OUT/environment.txt" 2>&1

# 2. The extension, in place, for this GPU.
export TORCH_CUDA_ARCH_LIST
TORCH_CUDA_ARCH_LIST=$("$PYTHON" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))")
export MAX_JOBS=$(nproc)
export FORCE_CUDA=1
if [[ -z ${CUDA_HOME:-} ]]; then
  if [[ -x /usr/local/cuda/bin/nvcc ]]; then
    export CUDA_HOME=/usr/local/cuda
  elif command -v nvcc >/dev/null; then
    CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")")
    export CUDA_HOME
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
note "building for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST with MAX_JOBS=$MAX_JOBS, CUDA_HOME=${CUDA_HOME:-unset}"
step "build" build.log "$PYTHON" setup.py build_ext --inplace || exit 1
if ! "$PYTHON" -c "import gn_detection.layers as L; assert L.cuda_compiled(), 'built without its CUDA kernels'" \
    >>"$OUT/build.log" 2>&1; then
  note "the extension does not load with its CUDA kernels; the end of $OUT/build.log:"
  tail -n 5 "$OUT/build.log" | tee -a "$OUT/summary.txt"
  exit 1
fi

# 3. The op tests on CUDA (and the op's import without detectron2).
step "op tests on CUDA" op_tests_cuda.log "$PYTHON" -m pytest -q -p no:cacheprovider -k "cuda or without_detectron2" \
  --junitxml="$OUT/op_tests_cuda.xml" tests/test_group_norm_op.py tests/test_group_norm_module.py \
  tests/test_group_norm_errors.py tests/test_group_norm_import.py

# 4. The op benchmark on CUDA.
step "op benchmark on CUDA" benchmark_gn_cuda.log \
  "$PYTHON" tools/benchmark_gn.py --device cuda --json "$OUT/benchmark_gn_cuda.json"

# 5. The Mask R-CNN step benchmark on CUDA, where detectron2 is there.
if "$PYTHON" -c "import detectron2" >/dev/null 2>&1; then
  step "model benchmark on CUDA (bf16 autocast)" benchmark_model_cuda.log \
    "$PYTHON" tools/benchmark_model.py --device cuda --amp bf16 --json "$OUT/benchmark_model_cuda.json"
else
  note "model benchmark: skipped, detectron2 does not import with $PYTHON"
fi

note "done in $((SECONDS - START))s of ${BUDGET}s; logs and JSON in $OUT"
exit $FAILED

#!/usr/bin/env bash
# B7: one prepared GPU benchmark. Reference model (F0 16, k 9, L 8, 3 channels) at 512², batch 8:
# fp32 vs mixed precision vs XLA vs mixed + XLA (+ mixed fed by the augmentation pipeline): images/s,
# ms/step, achieved TFLOP/s against the card's peak, GPU utilisation and memory from nvidia-smi.
#
#   bash benchmarks/gpu.sh                  # from the repo root; ≈ 5–8 min including TensorFlow's start
#   OUT=/some/dir bash benchmarks/gpu.sh    # results (gpu_bench.jsonl, nvidia_smi.csv, logs) go there
#   bash benchmarks/gpu.sh --modes fp32 mixed --steps 10   # extra arguments go to benchmarks/gpu_bench.py
#
# Uses an installed TensorFlow that sees a GPU if there is one (PYTHON=... picks the interpreter);
# otherwise installs the repo with `pip install -e ".[gpu]"` (tensorflow[and-cuda], needs the network).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results/benchmarks/gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export PYTHONUNBUFFERED=1

{ date; uname -a; nvidia-smi || echo "nvidia-smi: not found"; } > "$OUT/nvidia-smi.txt" 2>&1
cat "$OUT/nvidia-smi.txt"

has_gpu_tf() {
  "$PY" - <<'EOF' 2>/dev/null
import sys
import tensorflow as tf
sys.exit(0 if tf.config.list_physical_devices("GPU") else 1)
EOF
}

if has_gpu_tf; then
  echo "using the installed TensorFlow with a GPU ($PY)"
else
  echo "no TensorFlow with a GPU for $PY: installing the repo with pip install -e \".[gpu]\""
  "$PY" -m pip install -q -e ".[gpu]"
  has_gpu_tf || { echo "TensorFlow still sees no GPU; see $OUT/nvidia-smi.txt" >&2; exit 3; }
fi

# The repo's packages: installed (editable) or importable from the checkout.
if ! "$PY" -c "import models, data, search.training" 2>/dev/null; then
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  if ! "$PY" -c "import models, data, search.training" 2>/dev/null; then
    echo "installing the repo's pure-Python dependencies (no TensorFlow change)"
    "$PY" -m pip install -q -e . --no-deps
    "$PY" -m pip install -q "keras-tuner==1.4.8" "optuna>=5,<6" "opencv-python-headless>=4.9,<6" "pyyaml>=6,<7"
  fi
fi

"$PY" -c "import tensorflow as tf; print('tensorflow', tf.__version__, tf.config.list_physical_devices('GPU'))" \
  2>&1 | tail -1 | tee "$OUT/tensorflow.txt"

# 8 minutes at most for the benchmark itself (the TensorFlow import included).
set +e
timeout 480 "$PY" benchmarks/gpu_bench.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_bench.log"
rc=${PIPESTATUS[0]}
set -e
echo "gpu_bench.py exit code $rc; results in $OUT"
exit "$rc"

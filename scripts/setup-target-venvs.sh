#!/usr/bin/env bash
# Builds the virtual environments of the audit targets that cannot share normspec's own:
#   .venvs/mxnet   MXNet 1.9.1 (needs numpy<1.24)
#   .venvs/paddle  PaddlePaddle 3.x
#   .venvs/tf      TensorFlow (CPU) with tf_keras (Keras 2)
# Usage: bash scripts/setup-target-venvs.sh [mxnet] [paddle] [tf]   (default: all three)
# The workers run there with this repository on PYTHONPATH; normspec itself is not installed in them.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${NORMSPEC_VENVS:-.venvs}
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(mxnet paddle tf)
for t in "${targets[@]}"; do
  start=$(date +%s)
  python3 -m venv "$root/$t"
  pip="$root/$t/bin/python -m pip install -q"
  case "$t" in
    mxnet)  $pip "numpy<1.24" "mxnet==1.9.1" ;;
    paddle) $pip "numpy<2.3" paddlepaddle ;;
    tf)     $pip tensorflow-cpu tf_keras ;;
    *) echo "unknown target venv: $t" >&2; exit 2 ;;
  esac
  echo "$t: ready in $(( $(date +%s) - start )) s ($root/$t)"
done

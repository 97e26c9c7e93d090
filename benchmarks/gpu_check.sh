#!/usr/bin/env bash
# The GPU device check of issue 16, as one script (under 4 minutes on a GPU). Run from the repository root
# on the lent GPU machine, with build/gpu-wheels carried along (`make gpu-wheels` fills it here):
#
#     bash benchmarks/gpu_check.sh            # results in $OUT (or out/gpu): cuda-tests.txt, gpu.txt, gpu.json
#
# It uses the machine's own python3 and CUDA torch, runs smoothadv from src/ through PYTHONPATH (no pip
# install), unpacks the carried wheels into a temporary folder, runs the `cuda` tests, then the
# measurements of benchmarks/gpu.py.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
SITE=$(mktemp -d)
for wheel in build/gpu-wheels/*.whl; do
    "$PY" -m zipfile -e "$wheel" "$SITE" || echo "cannot unpack $wheel"
done
export PYTHONPATH="$PWD/src:$PWD/tests:$SITE"
"$PY" - <<'PYEOF' | tee "$OUT/environment.txt"
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA DEVICE")
PYEOF
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_smoothing.py tests/test_attacks.py \
    > "$OUT/cuda-tests.txt" 2>&1
echo "cuda tests exit status $?" >> "$OUT/cuda-tests.txt"
tail -n 25 "$OUT/cuda-tests.txt"
timeout 90 "$PY" benchmarks/gpu.py --device cuda --json "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.txt"

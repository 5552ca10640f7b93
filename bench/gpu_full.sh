#!/usr/bin/env bash
# The GPU measurement of docs/PERFORMANCE.md, uncapped (--scale full: 2,048 patterns per baseline split, 100
# epochs), in one device call of at most 9 minutes: the old way all at once, the UI backfill on `fly64 ui`'s warm
# cluster and `dagster asset materialize`; the old way one by one is timed on one baseline and one dense dataset
# and multiplied (the bench says so).
#
# Prepare on the workstation, from the project root:
#   ../shared/device/wheels.sh dagster==1.13.27 dagster-webserver==1.13.27 "distributed>=2024.1" ptychi==2.2.0
# then one device call: carry [".whl"], command `bash bench/gpu_full.sh`, timeout 560 s. Extra arguments go to
# bench/compare_study.py (e.g. --scale demo --epochs 5 to try it on a CPU first).
set -euo pipefail
if [ -d .whl ]; then  # the device: its image has torch, numpy, scipy, ...; the study's stack comes from .whl/
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site .  # fly64
  export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
exec timeout 540 python3 bench/compare_study.py --gpu-full --out /tmp/bench-gpu-full "$@"

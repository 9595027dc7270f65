#!/bin/sh
# The image's install step, also run by the tests in a fresh virtual environment, so the recipe
# cannot rot unseen: a virtual environment at VENV with rewardserve's serving dependencies only
# (no torch, no transformers) for the cpu and gpu images, or with training's for the train image.
#
#   docker/install.sh VENV WHEEL cpu|gpu|train
set -eu
venv=$1 wheel=$2 variant=$3
python3 -m venv "$venv"
pip="$venv/bin/pip"
"$pip" install --upgrade pip
case "$variant" in
  cpu) "$pip" install "$wheel" ;;
  gpu)
    # onnxruntime and onnxruntime-gpu install the same `onnxruntime` module: keep only the
    # CUDA build (its CPU provider serves int8 bundles, which have no CUDA kernels).
    "$pip" install "$wheel[gpu]"
    "$pip" uninstall --yes onnxruntime
    "$pip" install --force-reinstall --no-deps onnxruntime-gpu
    # OpenVINO serves bf16 on CPUs; a GPU image serves fp16 on CUDA and does not need it.
    "$pip" uninstall --yes openvino openvino-telemetry
    ;;
  # torch==2.13.0 from the registry is its CUDA build on Linux: what GPU training wants.
  train) "$pip" install "$wheel[train]" ;;
  *) echo "install.sh: variant must be cpu, gpu or train, not $variant" >&2; exit 2 ;;
esac
# Fail the build here, not at the first request, if a training package slipped into a server.
if [ "$variant" != train ] && "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "install.sh: torch is installed; the serving image must not carry it" >&2
  exit 1
fi
# The CPU image serves bf16 variants through OpenVINO (x86 only): fail here if it is missing.
if [ "$variant" = cpu ] && [ "$(uname -m)" = x86_64 ]; then
  "$venv/bin/python" -c "import openvino" || { echo "install.sh: openvino is missing from the cpu image" >&2; exit 1; }
fi
"$venv/bin/rewardserve" --help > /dev/null

#!/usr/bin/env bash
# The image's model stage outside Docker: install a shipped model's base and build its
# store from the shipped branches in a fresh virtual environment with the CPU torch
# wheel, the same commands as the Dockerfile's `model` stage (tests/deploy/test_deploy.py
# keeps them in step). MODEL names the model in models/shipped/catalogue.json, as the
# image's build-arg does (default: the catalogue's default).
# Useful to check a change to the build before building the image, or to bake a model
# repository into a volume for Kubernetes (docs/operations.md).
#
#   deploy/build_model_store.sh OUT_DIR              # fresh venv in $BUILD_VENV
#   MODEL=small deploy/build_model_store.sh OUT_DIR  # the 6-layer model
#   PYTHON=.venv/bin/python deploy/build_model_store.sh OUT_DIR   # reuse an environment
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: [MODEL=NAME] deploy/build_model_store.sh OUT_DIR}
MODEL=${MODEL:-default}
torch_index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
if [[ -z ${PYTHON:-} ]]; then
    venv=${BUILD_VENV:-build/model-venv}
    python3 -m venv "$venv"
    "$venv/bin/pip" install --no-cache-dir --index-url "$torch_index" torch==2.13.0
    "$venv/bin/pip" install --no-cache-dir '.[train]'
    PYTHON=$venv/bin/python
fi
"$PYTHON" -m training.commands.default_model install-base \
    --model "$MODEL" --shipped models/shipped
"$PYTHON" -m training.commands.default_model build \
    --model "$MODEL" --shipped models/shipped --out "$out"

#!/usr/bin/env bash
# The image's model stage outside Docker: build the default model store from the
# shipped branches in a fresh virtual environment with the CPU torch wheel, the same
# commands as the Dockerfile's `model` stage (tests/deploy/test_deploy.py keeps them in step).
# Useful to check a change to the build before building the image, or to bake a model
# repository into a volume for Kubernetes (docs/operations.md).
#
#   deploy/build_model_store.sh OUT_DIR              # fresh venv in $BUILD_VENV
#   PYTHON=.venv/bin/python deploy/build_model_store.sh OUT_DIR   # reuse an environment
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: deploy/build_model_store.sh OUT_DIR}
torch_index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
if [[ -z ${PYTHON:-} ]]; then
    venv=${BUILD_VENV:-build/model-venv}
    python3 -m venv "$venv"
    "$venv/bin/pip" install --no-cache-dir --index-url "$torch_index" torch==2.13.0
    "$venv/bin/pip" install --no-cache-dir '.[train]'
    PYTHON=$venv/bin/python
fi
"$PYTHON" -m training.commands.default_model build --shipped models/shipped --out "$out"

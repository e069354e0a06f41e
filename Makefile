# Two entry points on a fresh machine: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL_DIR ?= model_store/default

.PHONY: install test lint serve model

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# Pin the CPU build first so nothing pulls the CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[all]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q

# The trained default model ships as its branches (model_store/shipped/, int8-packed weights); the first
# `make serve` builds the ONNX graphs from them (under a minute) and refuses the result
# unless every file matches the committed SHA256SUMS. The model directory is a versioned
# repository, so tasks can be updated live later
# (python -m training.store publish ... ; then POST /admin/reload or SIGHUP).
$(MODEL_DIR)/CURRENT: | install
	$(PY) -m training.default_model build --out $(MODEL_DIR)

model: $(MODEL_DIR)/CURRENT

# exec: Ctrl-C reaches the service alone, which drains and exits 0 (no make error).
serve: install model
	exec $(PY) -m service --model-dir $(MODEL_DIR)

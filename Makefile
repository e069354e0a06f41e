# Two entry points on a fresh machine: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Which shipped model `make serve` / `make model` use (models/shipped/catalogue.json):
# `default` (the catalogue's default, served from models/default) or a model's name
# (`make serve MODEL=small`: models/small, unless it is the default). MODEL_DIR=DIR
# builds and serves that model's repository at DIR instead.
MODEL ?= default
MODEL_DIR ?=
SHIPPED_MODEL := $(PY) -m training.commands.default_model
MODEL_ARGS = --model $(MODEL) $(if $(MODEL_DIR),--out $(MODEL_DIR))
# The serving environment: the serving extras only, no torch. The service's and the
# artifact format's tests run there too, on the tiny stores the first run built.
SERVE_VENV ?= .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed
TEST_STORES ?= $(CURDIR)/build/test-stores

.PHONY: install install-serve test lint serve model

# The first run's install says what each step is and how big before it starts, and pip
# shows its own progress: its unpacking is still quiet for a minute or two (torch alone
# is 750 MB installed). Sizes as measured for this environment: 2.6 GB in all.
$(STAMP): pyproject.toml
	@echo "==> [install 1/3] creating the environment $(VENV) (first run only; 2.6 GB when done)"
	python3 -m venv $(VENV)
	@echo "==> [install 2/3] torch 2.13.0, the CPU build: a 190 MB download, 750 MB installed"
	# Pin the CPU build first so nothing pulls the CUDA wheels.
	$(PY) -m pip install torch==2.13.0
	@echo "==> [install 3/3] the project and its dependencies: about 130 packages, 1.8 GB installed"
	$(PY) -m pip install -e '.[all]'
	touch $(STAMP)
	@echo "==> installed into $(VENV)"

install: $(STAMP)

$(SERVE_STAMP): pyproject.toml
	@echo "==> [install] the torch-free serving environment $(SERVE_VENV) (for make test)"
	python3 -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install -e '.[serve,cpu,test-serve]'
	@if $(SERVE_VENV)/bin/python -c 'import torch' 2>/dev/null; then \
		echo "$(SERVE_VENV) must not hold torch" >&2; exit 1; fi
	touch $(SERVE_STAMP)

install-serve: $(SERVE_STAMP)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Every test with torch (building the tiny stores into $(TEST_STORES)), then the
# service's and model_store's tests again without torch, on those stores.
test: lint install-serve
	rm -rf $(TEST_STORES)
	BERT_MTS_TEST_STORES=$(TEST_STORES) $(PY) -m pytest -q
	BERT_MTS_TEST_STORES=$(TEST_STORES) $(SERVE_VENV)/bin/python -m pytest -q \
		tests/service tests/model_store

# The trained models ship as their branches (models/shipped/<name>/, int8-packed
# weights); the first `make serve` of a model builds its ONNX graphs from them (the
# 6-layer model in under a minute, the 12-layer one a few minutes after its base's
# first-use download with a progress bar) and refuses the result unless every file
# matches the model's committed SHA256SUMS; later starts are immediate. The model
# directory is a versioned repository, so tasks can be updated live later
# (bert-mts-store publish ... ; then POST /admin/reload or SIGHUP). A default repository
# that an older version built at model_store/default is refused by the service with a
# one-line hint to move it. An unknown MODEL is one line naming the shipped ones.
model: install
	@echo "==> the $(MODEL) model's repository (built from its shipped branches if missing)"
	$(SHIPPED_MODEL) build $(MODEL_ARGS) --if-missing

# exec: Ctrl-C reaches the service alone, which drains and exits 0 (no make error).
serve: model
	@echo "==> serving the $(MODEL) model (ready when /ready answers; Ctrl-C stops it)"
	exec $(PY) -m service --model-dir "$$($(SHIPPED_MODEL) dir $(MODEL_ARGS))"

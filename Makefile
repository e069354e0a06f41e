# Two entry points on a fresh machine: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL_DIR ?= model_store/default
DATA_DIR ?= ../shared/data
BRANCHES := runs/default-branches
TASKS := sentiment paraphrase similarity

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

# Until a trained default model ships in the repository, the first `make serve` trains
# one (K = 2 for every task, about 10 minutes on 2 CPU cores) and merges it.
# The model directory is a versioned repository, so tasks can be updated live later
# (python -m training.store publish ... ; then POST /admin/reload or SIGHUP).
$(MODEL_DIR)/CURRENT: | install
	$(PY) training/finetune_top_layers.py --task all --layers 2 --data-dir $(DATA_DIR) \
		--out $(BRANCHES) --quiet --skip-bad-rows
	$(PY) -m training.store publish --store $(MODEL_DIR) \
		$(foreach t,$(TASKS),--branch $(BRANCHES)/$(t))

model: $(MODEL_DIR)/CURRENT

serve: install model
	$(PY) -m service --model-dir $(MODEL_DIR)

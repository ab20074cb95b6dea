# catlab: every user-facing target installs the virtual environment first (once, through a stamp file).
PY      ?= python3.11
VENV    := .venv
STAMP   := $(VENV)/.installed
CATLAB  := $(VENV)/bin/catlab
PYTHON  := $(VENV)/bin/python
STUDY   ?= ablation-consistency
ARGS    ?=

.PHONY: ablation-consistency test test-slow search figures report bench mlflow-ui install clean

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip >/dev/null
	@echo "catlab: installing catlab and its pinned dependencies into $(VENV) (once; about 2 min)"
	$(VENV)/bin/pip install --progress-bar off -e '.[dev,latent]'
	@touch $(STAMP)

install: $(STAMP)

ablation-consistency: $(STAMP)
	$(CATLAB) ablate ablation-consistency --workers 2 $(ARGS)

test: $(STAMP)
	$(PYTHON) -m pytest

test-slow: $(STAMP)
	$(PYTHON) -m pytest -m slow

search: $(STAMP)
	$(CATLAB) search ablation-consistency-weight --trials 8 --workers 2 $(ARGS)

figures: $(STAMP)
	$(CATLAB) report $(STUDY) --figures-only

report: $(STAMP)
	$(CATLAB) report $(STUDY)

bench: $(STAMP)
	$(PYTHON) bench/bench.py $(ARGS)

mlflow-ui: $(STAMP)
	@echo "the runs table of each study (open one of these once the UI is up):"
	@$(VENV)/bin/python -m catlab.tracking sqlite:///$(CURDIR)/mlflow.db
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --port 5000

clean:
	rm -rf runs studies reports/out bench/out
